"""One record -> a clean 16 kHz mono float32 wave and ASCII texts, or a named reason to skip it.

Bad input never raises out of `read_record`: it returns `Skip(reason, detail)` and the pipeline
counts the reason. Reasons:
  unreadable_audio   encoded bytes / file that no decoder can open
  truncated_audio    encoded file shorter than its header declares
  empty_audio        zero samples
  non_finite_audio   NaN or Inf samples
  silent_audio       peak amplitude below `silence_peak`
  too_long_audio     longer than `max_seconds` (unless `truncate_long`)
  missing_field      the record lacks the audio or text field
  empty_text         transcript (or a required text) empty after stripping
  non_ascii_text     a text the tokenizer cannot round-trip (non-ASCII or undecodable)
Other sample rates are resampled, multi-channel audio is averaged to mono.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct

import numpy as np

from data_pipelines.resample import SAMPLE_RATE, resample_to_16k
from data_pipelines.sources import FieldMap

SKIP_REASONS = ("unreadable_audio", "truncated_audio", "empty_audio", "non_finite_audio",
                "silent_audio", "too_long_audio", "missing_field", "empty_text",
                "non_ascii_text", "too_long_for_seq_len")


@dataclasses.dataclass(frozen=True)
class Skip:
    reason: str
    detail: str = ""

    def __post_init__(self):
        if self.reason not in SKIP_REASONS:
            raise ValueError(f"Skip.reason: expected one of {SKIP_REASONS}, got {self.reason!r}")


@dataclasses.dataclass(frozen=True)
class AudioLimits:
    max_seconds: float = 8.0  # = T mel frames / 100
    truncate_long: bool = False  # cut long clips to max_seconds instead of skipping them
    silence_peak: float = 1e-4  # |x| peak below this = silence

    def __post_init__(self):
        if self.max_seconds <= 0:
            raise ValueError(f"AudioLimits.max_seconds: expected > 0, got {self.max_seconds}")
        if self.silence_peak < 0:
            raise ValueError(f"AudioLimits.silence_peak: expected >= 0, got {self.silence_peak}")


@dataclasses.dataclass(frozen=True)
class Record:
    wave: np.ndarray  # float32, 16 kHz, mono, finite, in [-1, 1]
    text: str
    speaker: str  # "" if unknown
    id: str
    instruction: str
    tagged_text: str
    persona: str
    answer: str


class _BadAudio(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


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


def _decode_file_bytes(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            wave = f.read(dtype="float32", always_2d=True)
            sample_rate = f.samplerate
    except Exception as e:  # libsndfile raises several types for corrupt input
        raise _BadAudio("unreadable_audio", f"{type(e).__name__}: {e}") from None
    missing = _wav_data_shortfall(data)
    if missing:
        raise _BadAudio("truncated_audio", f"WAV data chunk is {missing} bytes short")
    return wave, sample_rate


def _to_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.int32:
        return (samples.astype(np.float64) / 2**31).astype(np.float32)
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.integer):  # int64 storage of int16 samples
        return samples.astype(np.float32) / 32768.0
    return samples.astype(np.float32)


def load_wave(value, default_sample_rate: int) -> np.ndarray:
    """Any stored audio (sample array, encoded file bytes, or a file path) -> mono 16 kHz."""
    if isinstance(value, str | os.PathLike):
        try:
            with open(value, "rb") as f:
                value = f.read()
        except OSError as e:
            raise _BadAudio("unreadable_audio", f"{value}: {e}") from None
    if isinstance(value, bytes | bytearray | memoryview):
        wave, sample_rate = _decode_file_bytes(bytes(value))
    else:
        wave, sample_rate = _to_float(np.asarray(value)), default_sample_rate
    if wave.ndim == 2:
        # (samples, channels) as soundfile/TFDS store it; a (channels, samples) array is
        # recognized by having fewer rows than columns.
        channel_axis = 1 if wave.shape[0] >= wave.shape[1] else 0
        wave = wave.mean(axis=channel_axis)
    if wave.ndim != 1:
        raise _BadAudio("unreadable_audio", f"expected 1-D or 2-D audio, got {wave.shape}")
    if wave.size == 0:
        raise _BadAudio("empty_audio", "0 samples")
    if not np.all(np.isfinite(wave)):
        raise _BadAudio("non_finite_audio", f"{int(np.sum(~np.isfinite(wave)))} NaN/Inf samples")
    wave = resample_to_16k(wave, int(sample_rate))
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def _text(record: dict, field: str | None) -> str:
    if field is None or field not in record:
        return ""
    value = record[field]
    if isinstance(value, bytes | np.bytes_):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _check_text(text: str, what: str) -> Skip | None:
    if not text.strip():
        return Skip("empty_text", f"{what} is empty")
    if not text.isascii() or "\ufffd" in text:
        return Skip("non_ascii_text", f"{what} {text[:40]!r} is not ASCII")
    return None


def read_record(record: dict, fields: FieldMap, limits: AudioLimits,
                required_texts: tuple[str, ...] = ()) -> Record | Skip:
    """Validated `Record`, or `Skip` naming why the record cannot be used.

    required_texts: FieldMap attribute names (e.g. "persona", "answer") that must be
    non-empty ASCII for the task; the transcript (`text`) is always required.
    """
    for name in (fields.audio, fields.text):
        if name not in record:
            return Skip("missing_field", f"no field {name!r}; record has {sorted(record)}")
    try:
        wave = load_wave(record[fields.audio], fields.sample_rate)
    except _BadAudio as e:
        return Skip(e.reason, str(e))
    if float(np.max(np.abs(wave))) < limits.silence_peak:
        return Skip("silent_audio", f"peak {float(np.max(np.abs(wave))):.2e}")
    max_samples = int(round(limits.max_seconds * SAMPLE_RATE))
    if len(wave) > max_samples:
        if not limits.truncate_long:
            return Skip("too_long_audio", f"{len(wave) / SAMPLE_RATE:.2f} s > "
                                          f"{limits.max_seconds} s")
        wave = wave[:max_samples]
    values = {name: _text(record, getattr(fields, name))
              for name in ("text", "instruction", "tagged_text", "persona", "answer")}
    for name in ("text", *required_texts):
        if name != "text" and getattr(fields, name) not in record:
            return Skip("missing_field", f"no field {getattr(fields, name)!r} for {name}")
        if (skip := _check_text(values[name], name)) is not None:
            return skip
    for name in ("instruction", "tagged_text"):  # optional: dropped if unusable
        if values[name] and _check_text(values[name], name) is not None:
            values[name] = ""
    speaker = record.get(fields.speaker) if fields.speaker else None
    if isinstance(speaker, bytes | np.bytes_):
        speaker = bytes(speaker).decode("utf-8", errors="replace")
    return Record(wave=wave, speaker="" if speaker is None else str(speaker),
                  id=_text(record, fields.id), **values)
