"""One record -> a clean 16 kHz mono float32 wave and ASCII texts, or a named reason to skip it.

Bad input never raises out of `read_record`: it returns `Skip(reason, detail)` and the pipeline
counts the reason. Reasons:
  unreadable_audio   encoded bytes / file that no decoder can open
  truncated_audio    encoded file shorter than its header declares
  empty_audio        zero samples
  too_short_audio    fewer samples than `min_samples`
  non_finite_audio   NaN or Inf samples
  silent_audio       peak amplitude below `silence_peak`
  too_long_audio     longer than `max_seconds` (unless `truncate_long`)
  missing_field      the record lacks the audio or text field
  empty_text         transcript (or a required text) empty after stripping
  non_ascii_text     a text the tokenizer cannot round-trip (non-ASCII or undecodable)
and later in the pipeline:
  too_long_for_seq_len   the example's token stream is longer than seq_len
  missing_cache_entry    the regime reads cached arrays (a RecordCache) the record has none of
Audio is read by the one reader, `chorus.audio.io.load_wave` (other sample rates resampled,
multi-channel audio averaged to mono).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chorus.audio.io import REASONS as AUDIO_REASONS
from chorus.audio.io import AudioError, load_wave
from chorus.audio.resample import SAMPLE_RATE
from data_pipelines.sources import FieldMap

SKIP_REASONS = (*AUDIO_REASONS, "silent_audio", "too_long_audio", "missing_field", "empty_text",
                "non_ascii_text", "too_long_for_seq_len", "missing_cache_entry",
                "unknown_question", "ambiguous_request")


@dataclasses.dataclass(frozen=True)
class Skip:
    reason: str
    detail: str = ""

    def __post_init__(self):
        if self.reason not in SKIP_REASONS:
            raise ValueError(f"Skip.reason: expected one of {SKIP_REASONS}, got {self.reason!r}")


@dataclasses.dataclass(frozen=True)
class AudioLimits:
    max_seconds: float | None = 8.0  # = T mel frames / 100; None: no limit
    truncate_long: bool = False  # cut long clips to max_seconds instead of skipping them
    silence_peak: float = 1e-4  # |x| peak below this = silence
    min_samples: int = 1  # fewer samples (at 16 kHz) = too_short_audio

    def __post_init__(self):
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"AudioLimits.max_seconds: expected > 0, got {self.max_seconds}")
        if self.min_samples < 1:
            raise ValueError(f"AudioLimits.min_samples: expected >= 1, got {self.min_samples}")
        if self.silence_peak < 0:
            raise ValueError(f"AudioLimits.silence_peak: expected >= 0, got {self.silence_peak}")


DEFAULT_LIMITS = AudioLimits()


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


def field_text(record: dict, field: str | None) -> str:
    """A raw record's field as a string (bytes decoded as UTF-8); "" if absent or None."""
    value = record.get(field) if field else None
    if value is None:
        return ""
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
        wave = load_wave(record[fields.audio], fields.sample_rate, source=f"field {fields.audio!r}",
                         min_samples=limits.min_samples)
    except AudioError as e:
        return Skip(e.reason, str(e))
    if float(np.max(np.abs(wave))) < limits.silence_peak:
        return Skip("silent_audio", f"peak {float(np.max(np.abs(wave))):.2e}")
    max_samples = None if limits.max_seconds is None else int(round(limits.max_seconds *
                                                                     SAMPLE_RATE))
    if max_samples is not None and len(wave) > max_samples:
        if not limits.truncate_long:
            return Skip("too_long_audio", f"{len(wave) / SAMPLE_RATE:.2f} s > "
                                          f"{limits.max_seconds} s")
        wave = wave[:max_samples]
    values = {name: field_text(record, getattr(fields, name))
              for name in ("text", "instruction", "tagged_text", "persona", "answer")}
    for name in ("text", *required_texts):
        if name != "text" and getattr(fields, name) not in record:
            return Skip("missing_field", f"no field {getattr(fields, name)!r} for {name}")
        if (skip := _check_text(values[name], name)) is not None:
            return skip
    for name in ("instruction", "tagged_text"):  # optional: dropped if unusable
        if values[name] and _check_text(values[name], name) is not None:
            values[name] = ""
    return Record(wave=wave, speaker=field_text(record, fields.speaker),
                  id=field_text(record, fields.id), **values)
