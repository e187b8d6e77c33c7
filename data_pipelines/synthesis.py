"""Speech synthesis for the corpus: text + voice controls -> 16 kHz mono float32 + metadata.

    wave, meta = synthesize("Turn left at the bank.", voice="en-gb+f3", rate=160, pitch=60)

`synthesize_segments` speaks several pieces with different controls (the inline-tag TTS data:
"(whispering) then stop" really is whispered) and joins them with a short pause.
See `espeak.py` for what "deterministic" means with eSpeak.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chorus.audio.io import from_int16
from chorus.audio.resample import SAMPLE_RATE, resample
from data_pipelines import espeak
from data_pipelines.voices import get_voice

SEGMENT_PAUSE_SECONDS = 0.15
_EDGE_SILENCE_SECONDS = 0.05  # kept before the first / after the last audible sample
_SILENCE_THRESHOLD = 1e-3  # |x| below this counts as silence when trimming the edges


@dataclasses.dataclass(frozen=True)
class Segment:
    """One stretch of speech with its own controls (voice may switch variant, e.g. whisper)."""

    text: str
    voice: str = "en-us"
    rate: int = 175
    pitch: int = 50
    volume: int = 100

    def __post_init__(self):
        if not self.text.strip():
            raise ValueError(f"synthesis text: expected non-empty text, got {self.text!r}")
        get_voice(self.voice)  # validates the name
        espeak.check_controls(self.rate, self.pitch, self.volume)


@dataclasses.dataclass(frozen=True)
class SynthesisMetadata:
    text: str
    voice: str
    speaker_id: int
    rate: int  # words per minute
    pitch: int  # 0..99, 50 = the voice's normal pitch
    volume: int  # 0..200, 100 = normal
    duration: float  # seconds
    sample_rate: int
    seed: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def to_16k_float(wave_int16: np.ndarray, sample_rate: int) -> np.ndarray:
    wave = resample(from_int16(wave_int16), sample_rate)
    return np.clip(wave, -1.0, 1.0)


def trim_edges(wave: np.ndarray) -> np.ndarray:
    """Drops leading/trailing silence beyond a short margin."""
    loud = np.flatnonzero(np.abs(wave) > _SILENCE_THRESHOLD)
    if loud.size == 0:
        return wave[:0]
    margin = int(_EDGE_SILENCE_SECONDS * SAMPLE_RATE)
    return wave[max(0, loud[0] - margin): loud[-1] + 1 + margin]


def _speak(segment: Segment, seed: int) -> np.ndarray:
    engine = espeak.get_engine()
    raw = engine.synthesize(segment.text, get_voice(segment.voice).espeak_name, segment.rate,
                            segment.pitch, segment.volume, seed)
    return trim_edges(to_16k_float(raw, engine.sample_rate))


def synthesize_segments(segments: list[Segment], seed: int = 0) -> np.ndarray:
    """Speaks each segment with its own controls; joins them with a short pause."""
    if not segments:
        raise ValueError("synthesize_segments: expected at least one segment, got none")
    pause = np.zeros(int(SEGMENT_PAUSE_SECONDS * SAMPLE_RATE), np.float32)
    pieces = []
    for i, segment in enumerate(segments):
        if i:
            pieces.append(pause)
        pieces.append(_speak(segment, seed + i))
    return np.concatenate(pieces).astype(np.float32)


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
               volume: int = 100, seed: int = 0) -> tuple[np.ndarray, SynthesisMetadata]:
    """Speaks `text`; returns (16 kHz mono float32 wave in [-1, 1], metadata).

    voice: a `voices.VOICES` name such as "en-us", "en-gb+f3", "en-gb-scotland+croak".
    rate: words per minute in [80, 450]; pitch: [0, 99]; volume: [0, 200].
    """
    segment = Segment(text, voice, rate, pitch, volume)
    wave = synthesize_segments([segment], seed)
    meta = SynthesisMetadata(text=text, voice=voice, speaker_id=get_voice(voice).speaker_id,
                             rate=rate, pitch=pitch, volume=volume,
                             duration=len(wave) / SAMPLE_RATE, sample_rate=SAMPLE_RATE,
                             seed=seed)
    return wave, meta
