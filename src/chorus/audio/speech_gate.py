"""Does a whole clip hold speech? The no-speech gate in front of ASR decoding.

    gate = SpeechGate()                        # min_clip_ms, min_speech_ms, the VAD's settings
    decision = gate_decision(wave, gate)       # 16 kHz float wave, any length (empty too)
    decision.speech, decision.reason           # False, "too_short" | "no_speech" | "empty"
    has_speech(wave, gate) -> bool

A decoder trained only on speech answers every input with a confident sentence, silence and
noise included. The gate is the voice-activity detector run over the clip
(`chorus.audio.vad.VoiceActivityDetector`: one definition of a speech frame, WebRTC's VAD and
not spectrally flat like noise): the clip holds speech when it is at least `min_clip_ms` long
and the detector opens a turn in it, i.e. finds `min_speech_ms` of consecutive speech frames.
Digital silence, low-level noise and white noise at any level open none (white noise is flat,
0.56); eSpeak's whispered voices are not flat (median frame flatness 0.03, measured on the
reproduce corpus) and pass like the other voices.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chorus.audio.io import check_wave
from chorus.audio.resample import SAMPLE_RATE
from chorus.audio.vad import FRAME_MS, VadConfig, VoiceActivityDetector
from chorus.config import check

REASONS = ("speech", "empty", "too_short", "no_speech")


@dataclasses.dataclass(frozen=True)
class SpeechGate:
    """min_clip_ms: shorter clips hold no speech (no word fits); min_speech_ms: consecutive
    speech frames that make a region; frame_ms / aggressiveness / max_flatness: the VAD's
    frame decision (chorus.audio.vad.VadConfig); gap_ms: non-speech that splits regions."""

    min_clip_ms: int = 100
    min_speech_ms: int = 90
    frame_ms: int = 30
    aggressiveness: int = 3
    max_flatness: float = 0.35
    gap_ms: int = 300

    def __post_init__(self):
        check(self.frame_ms in FRAME_MS, "speech_gate.frame_ms", f"one of {list(FRAME_MS)}",
              self.frame_ms)
        check(self.aggressiveness in (0, 1, 2, 3), "speech_gate.aggressiveness",
              "0, 1, 2 or 3", self.aggressiveness)
        check(self.min_clip_ms >= 0, "speech_gate.min_clip_ms", "a number >= 0",
              self.min_clip_ms)
        for name in ("min_speech_ms", "gap_ms"):
            check(getattr(self, name) >= self.frame_ms, f"speech_gate.{name}",
                  f">= speech_gate.frame_ms={self.frame_ms}", getattr(self, name))
        check(0.0 < self.max_flatness <= 1.0, "speech_gate.max_flatness",
              "a value in (0, 1]", self.max_flatness)

    @property
    def vad(self) -> VadConfig:
        return VadConfig(frame_ms=self.frame_ms, aggressiveness=self.aggressiveness,
                         silence_ms=self.gap_ms, min_speech_ms=self.min_speech_ms,
                         max_flatness=self.max_flatness)


@dataclasses.dataclass(frozen=True)
class SpeechActivity:
    """What the VAD found in a clip: regions [(start, end) samples] of speech (opened by
    min_speech_ms of speech frames, closed by gap_ms of none), the seconds they span, the
    seconds of speech frames (in regions or not), and the clip's length."""

    regions: tuple[tuple[int, int], ...]
    speech_seconds: float
    voiced_seconds: float
    clip_seconds: float


@dataclasses.dataclass(frozen=True)
class GateDecision:
    speech: bool
    reason: str  # one of REASONS
    activity: SpeechActivity | None  # None when the clip was too short to look at


def speech_activity(wave, gate: SpeechGate = SpeechGate(),
                    source: str = "waveform") -> SpeechActivity:
    """The VAD run over one clip (16 kHz mono floats); AudioError naming `source` for a
    non-1-D or non-finite wave."""
    wave = np.asarray(wave)
    # validated and, for integer samples, scaled to [-1, 1] (an empty clip has no regions)
    wave = check_wave(wave, source) if wave.ndim != 1 or wave.size else wave.astype(np.float32)
    vad = VoiceActivityDetector(gate.vad)
    starts, regions = [], []
    for event in vad.push(wave):
        if event.kind == "start":
            starts.append(event.sample)
        else:
            regions.append((starts.pop(), event.sample))
    if vad.in_speech:  # the clip ends inside speech
        regions.append((starts.pop(), vad.last_speech_end))
    return SpeechActivity(
        regions=tuple(regions),
        speech_seconds=sum(end - start for start, end in regions) / SAMPLE_RATE,
        voiced_seconds=vad.speech_frame_count * gate.frame_ms / 1000,
        clip_seconds=wave.size / SAMPLE_RATE)


def gate_decision(wave, gate: SpeechGate = SpeechGate(), source: str = "waveform",
                  ) -> GateDecision:
    """Whether a clip holds speech, and why not: "empty" (no samples), "too_short" (under
    min_clip_ms), "no_speech" (the VAD found no region)."""
    wave = np.asarray(wave, np.float32)
    if wave.ndim == 1 and wave.size == 0:
        return GateDecision(False, "empty", None)
    if wave.ndim == 1 and wave.size * 1000 < gate.min_clip_ms * SAMPLE_RATE:
        check_wave(wave, source)
        return GateDecision(False, "too_short", None)
    activity = speech_activity(wave, gate, source)
    if not activity.regions:
        return GateDecision(False, "no_speech", activity)
    return GateDecision(True, "speech", activity)


def has_speech(wave, gate: SpeechGate = SpeechGate()) -> bool:
    return gate_decision(wave, gate).speech
