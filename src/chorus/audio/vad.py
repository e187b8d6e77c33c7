"""Voice-activity detection: when speech starts and ends (the realtime turn detector), and
the frame decision the ASR speech gate (chorus.audio.speech_gate) counts.

    vad = VoiceActivityDetector(VadConfig(silence_ms=500))
    for event in vad.push(chunk):         # any length of 16 kHz float samples
        event.kind, event.sample, event.detected_at     # "start" | "end"

Frames of 10 / 20 / 30 ms go through WebRTC's VAD (`webrtcvad`, from the `webrtcvad-wheels`
distribution: prebuilt wheels, the same C code and API as `webrtcvad`). WebRTC's GMM alone
calls broadband noise speech (measured on white noise of rms 0.03 and up: every frame at every
aggressiveness), so a frame counts as speech only when its spectral flatness (Wiener entropy:
geometric / arithmetic mean of the power spectrum) is also below `max_flatness`: voiced
speech is peaky (eSpeak: median 0.003, 90th percentile 0.1-0.2), white noise is flat (0.56 at
any level). eSpeak's whispered voices (+whisper, +whisperf) keep their formants and pass
(median 0.03); a real whisper, closer to shaped noise, may not. Coloured noise (pink, brown)
and steady tones are not flat, and can pass.

A turn starts after `min_speech_ms` of consecutive speech frames (so a click or a noise burst
does not open one) and ends after `silence_ms` of consecutive non-speech frames. `sample` is
where the speech started (the run's first frame) or ended (the last speech frame's end);
`detected_at` is the stream position when the detector knew (end: `sample` + the silence
threshold rounded up to whole frames).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from chorus.audio.resample import SAMPLE_RATE

FRAME_MS = (10, 20, 30)  # what WebRTC's VAD accepts at 16 kHz


@dataclasses.dataclass(frozen=True)
class VadConfig:
    """frame_ms: 10 | 20 | 30; aggressiveness: WebRTC's mode 0 (lenient) .. 3 (strict);
    silence_ms: non-speech that ends a turn; min_speech_ms: speech that starts one;
    max_flatness: frames at or above this spectral flatness are not speech (noise)."""

    frame_ms: int = 30
    aggressiveness: int = 3
    silence_ms: int = 500
    min_speech_ms: int = 90
    max_flatness: float = 0.35

    def __post_init__(self):
        if self.frame_ms not in FRAME_MS:
            raise ValueError(f"vad.frame_ms: expected one of {list(FRAME_MS)}, got "
                             f"{self.frame_ms!r}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"vad.aggressiveness: expected 0, 1, 2 or 3, got "
                             f"{self.aggressiveness!r}")
        if not self.silence_ms >= self.frame_ms:
            raise ValueError(f"vad.silence_ms: expected >= vad.frame_ms={self.frame_ms}, got "
                             f"{self.silence_ms!r}")
        if not self.min_speech_ms >= self.frame_ms:
            raise ValueError(f"vad.min_speech_ms: expected >= vad.frame_ms={self.frame_ms}, got "
                             f"{self.min_speech_ms!r}")
        if not 0.0 < self.max_flatness <= 1.0:
            raise ValueError(f"vad.max_flatness: expected a value in (0, 1], got "
                             f"{self.max_flatness!r}")

    @property
    def frame_samples(self) -> int:
        return SAMPLE_RATE * self.frame_ms // 1000

    @property
    def silence_frames(self) -> int:
        return math.ceil(self.silence_ms / self.frame_ms)

    @property
    def speech_frames(self) -> int:
        return math.ceil(self.min_speech_ms / self.frame_ms)


@dataclasses.dataclass(frozen=True)
class VadEvent:
    kind: str  # "start" | "end"
    sample: int  # stream sample where the speech started / ended
    detected_at: int  # stream sample at which the detector decided


def spectral_flatness(frame: np.ndarray) -> float:
    """Geometric / arithmetic mean of the Hann-windowed power spectrum (DC dropped): ~0 for
    a harmonic sound, ~0.56 for white noise, 1 for digital silence (a flat zero)."""
    power = np.abs(np.fft.rfft(frame * np.hanning(frame.size)))[1:] ** 2 + 1e-12
    return float(np.exp(np.mean(np.log(power))) / np.mean(power))


class VoiceActivityDetector:
    """The streaming turn detector: push samples, get start / end events."""

    def __init__(self, config: VadConfig | None = None):
        import webrtcvad

        self.config = config or VadConfig()
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        self.reset()

    def reset(self) -> None:
        """Forgets the stream (positions restart at 0)."""
        self._buffer = np.zeros((0,), np.float32)
        self.position = 0  # samples of the stream consumed into frames
        self.in_speech = False
        self._run = 0  # consecutive frames of the current kind (speech when idle, else silence)
        self._run_start = 0
        self._last_speech_end = 0
        self.speech_frame_count = 0  # frames `frame_is_speech` accepted since the reset

    @property
    def last_speech_end(self) -> int:
        """Stream sample where the current (or last) turn's last speech frame ended."""
        return self._last_speech_end

    def frame_is_speech(self, frame: np.ndarray) -> bool:
        """One frame (frame_samples floats in [-1, 1]): WebRTC says speech and it is not
        flat like noise."""
        if frame.shape != (self.config.frame_samples,):
            raise ValueError(f"vad frame: expected {self.config.frame_samples} samples, got "
                             f"shape {frame.shape}")
        pcm = (np.clip(frame, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        return (self._vad.is_speech(pcm, SAMPLE_RATE)
                and spectral_flatness(frame) < self.config.max_flatness)

    def push(self, samples) -> list[VadEvent]:
        """Samples (1-D float, any length, 16 kHz) -> the events they complete."""
        samples = np.asarray(samples, np.float32)
        if samples.ndim != 1:
            raise ValueError(f"vad samples: expected a 1-D array of 16 kHz samples, got shape "
                             f"{samples.shape}")
        self._buffer = np.concatenate([self._buffer, samples])
        n, cfg, events = self.config.frame_samples, self.config, []
        while self._buffer.size >= n:
            frame, self._buffer = self._buffer[:n], self._buffer[n:]
            start, self.position = self.position, self.position + n
            speech = self.frame_is_speech(frame)
            self.speech_frame_count += int(speech)
            if not self.in_speech:
                if not speech:
                    self._run = 0
                    continue
                if self._run == 0:
                    self._run_start = start
                self._run += 1
                if self._run >= cfg.speech_frames:
                    self.in_speech, self._run = True, 0
                    self._last_speech_end = self.position
                    events.append(VadEvent("start", self._run_start, self.position))
            elif speech:
                self._run, self._last_speech_end = 0, self.position
            else:
                self._run += 1
                if self._run >= cfg.silence_frames:
                    self.in_speech, self._run = False, 0
                    events.append(VadEvent("end", self._last_speech_end, self.position))
        return events
