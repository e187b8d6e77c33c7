"""The one audio reader / validator / writer: any stored audio -> clean 16 kHz mono float32.

    wave = load_wave("speech.flac")              # a path, encoded file bytes, or samples
    wave = load_wave(int16_samples, 22_050)      # raw samples at their rate -> 16 kHz
    write_wav("out.wav", wave)                   # 16-bit PCM, atomically

One int16 convention, both ways: float = int16 / 32768, int16 = clip(round(float * 32768)).
Resampling is soxr's HQ (`chorus.audio.resample`). Every failure is an `AudioError` whose
`reason` is one of `REASONS` (data pipelines count them; commands print the message).
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np

from chorus.atomic import atomic_path
from chorus.audio.resample import SAMPLE_RATE, resample

INT16_SCALE = 32768.0
REASONS = ("unreadable_audio", "truncated_audio", "empty_audio", "non_finite_audio",
           "too_short_audio")


class AudioError(ValueError):
    """Bad audio; `reason` names the kind (one of REASONS), the message the source and why."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"AudioError.reason: expected one of {REASONS}, got {reason!r}")
        super().__init__(message)
        self.reason = reason


def to_int16(wave: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> int16 (clipped, rounded)."""
    scaled = np.round(np.asarray(wave, np.float64) * INT16_SCALE)
    return np.clip(scaled, -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)


def from_int16(samples: np.ndarray) -> np.ndarray:
    return (np.asarray(samples).astype(np.float32) / np.float32(INT16_SCALE))


def _wav_data_shortfall(data: bytes) -> int:
    """Bytes missing from a RIFF/WAVE file's data chunk (0 if complete or not a WAV)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk_id == b"data":
            return max(0, size - (len(data) - pos - 8))
        pos += 8 + size + (size & 1)
    return 0


def _decode_file_bytes(data: bytes, source: str) -> tuple[np.ndarray, int]:
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            wave = f.read(dtype="float32", always_2d=True)
            sample_rate = f.samplerate
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types for corrupt input
        raise AudioError("unreadable_audio", f"{source}: expected a readable audio file, got "
                                             f"{type(e).__name__}: {e}") from None
    missing = _wav_data_shortfall(data)
    if missing:
        raise AudioError("truncated_audio", f"{source}: WAV data chunk is {missing} bytes short")
    return wave, sample_rate


def samples_to_float(samples: np.ndarray) -> np.ndarray:
    """Stored sample arrays of any integer width (or float) -> float32 in [-1, 1]."""
    if samples.dtype == np.int16:
        return from_int16(samples)
    if samples.dtype == np.int32:
        return (samples.astype(np.float64) / 2**31).astype(np.float32)
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.integer):  # int64 storage of int16 samples
        return from_int16(samples)
    return samples.astype(np.float32)


def load_wave(value, sample_rate: int = SAMPLE_RATE, *, source: str | None = None,
              min_samples: int = 1) -> np.ndarray:
    """Any stored audio -> finite mono float32 at 16 kHz in [-1, 1], or AudioError.

    value: a file path, encoded file bytes (any format libsndfile reads), or a sample array at
    `sample_rate` (files carry their own rate). Multi-channel audio is averaged to mono; a
    (channels, samples) array is recognized by having fewer rows than columns.
    min_samples: fewer samples (at 16 kHz) than this is an error ("too_short_audio").
    """
    if source is None:
        source = str(value) if isinstance(value, str | os.PathLike) else "audio"
    if isinstance(value, str | os.PathLike):
        try:
            with open(value, "rb") as f:
                value = f.read()
        except OSError as e:
            raise AudioError("unreadable_audio", f"{source}: expected an existing audio file, "
                                                 f"got {e.strerror or e}") from None
    if isinstance(value, bytes | bytearray | memoryview):
        wave, sample_rate = _decode_file_bytes(bytes(value), source)
    else:
        wave = samples_to_float(np.asarray(value))
    if wave.size == 0:
        raise AudioError("empty_audio", f"{source}: expected audio, got 0 samples")
    if wave.ndim == 2:
        channel_axis = 1 if wave.shape[0] >= wave.shape[1] else 0
        wave = wave.mean(axis=channel_axis)
    if wave.ndim != 1:
        raise AudioError("unreadable_audio", f"{source}: expected 1-D or 2-D audio, got shape "
                                             f"{wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise AudioError("non_finite_audio", f"{source}: expected finite samples, got "
                                             f"{int(np.sum(~np.isfinite(wave)))} NaN/Inf")
    wave = np.clip(resample(wave, int(sample_rate), SAMPLE_RATE), -1.0, 1.0).astype(np.float32)
    if wave.size < min_samples:
        raise AudioError("too_short_audio", f"{source}: expected at least {min_samples} samples "
                                            f"at 16 kHz, got {wave.size}")
    return wave


def check_wave(wave: np.ndarray, source: str = "waveform", min_samples: int = 1) -> np.ndarray:
    """An in-memory 16 kHz float waveform, validated like `load_wave` (no resampling)."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise AudioError("unreadable_audio", f"{source}: expected a mono 1-D waveform, got "
                                             f"shape {wave.shape}")
    if not np.issubdtype(wave.dtype, np.floating):
        wave = samples_to_float(wave)
    return load_wave(wave.astype(np.float32), SAMPLE_RATE, source=source,
                     min_samples=min_samples)


def write_wav(path: str, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV, written atomically (temp file beside `path`, then os.replace).

    The samples are validated like `check_wave` (finite, mono; written as given, at
    `sample_rate`: nothing is resampled)."""
    import soundfile

    wave = check_wave(wave, f"{path} (to write)")
    with atomic_path(path) as tmp:
        soundfile.write(tmp, to_int16(wave), sample_rate, subtype="PCM_16", format="WAV")
