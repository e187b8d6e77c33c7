"""The regime: what a mode gives the data pipeline to turn a record into a token stream.

data_pipelines knows records, audio features, tokenizers, caches, packing and batching; it
knows no mode. A mode (experiments/asr, experiments/tts/, experiments/realtime/regime.py, or a test)
hands `make_train_iterator` / `make_eval_iterator` an object with these members:

    name: str                      for messages ("asr", "tts", ...)
    required_texts: tuple[str,...] FieldMap attributes that must be non-empty ASCII in a record
                                   ("persona", "answer"); the transcript (`text`) always is
    audio_input: bool              the record's audio enters the stream as a log-mel clip:
                                   the pipeline augments the wave (augment_config), computes
                                   `features` and packs the clip beside the stream's <audio>
                                   placeholders (one clip per example)
    cached: tuple[str, ...]        per-record arrays it reads from a `RecordCache` ("codes");
                                   a record without an entry is skipped (missing_cache_entry)
    stream(ex) -> Stream | Skip    the example's token stream (`streams.assemble`): prompt
                                   parts unsupervised, target parts supervised
    reference(ex) -> dict          eval-only fields of the example: at least `reference_text`
                                   and `reference_ids` (the ids a decoder should produce)
    accepts(raw, fields) -> bool   optional: keep only the records it accepts (e.g. dialogue
                                   turns), reading the raw record's keys through the
                                   iterator's FieldMap; one pass over the split at construction
    input_wave(record, rng)        optional, with audio_input: the 16 kHz wave of the input
        -> wave | Skip | None      clip when it is not the record's own audio (TTS: another
                                   utterance of the record's voice, a speaker prompt); None =
                                   no clip for this example. The clip is cut to max_frames and
                                   the record's own audio is then not bounded by max_frames.

`ExampleInputs` is what `stream` and `reference` receive. A regime must be picklable (grain
workers get a copy); frozen dataclasses are. `check_regime` validates one at construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from chorus.vocab import VocabLayout
from data_pipelines.records import Record, Skip
from data_pipelines.sources import FieldMap
from data_pipelines.streams import Stream


@dataclasses.dataclass(frozen=True)
class ExampleInputs:
    """One record, ready for a regime."""

    record: Record  # validated: 16 kHz float32 wave (clean, never augmented), ASCII texts
    features: np.ndarray | None  # float32 [frames, 128] log-mel of the (augmented) audio
    #                              input when regime.audio_input, else None
    cached: Mapping[str, np.ndarray]  # {name: array} for each name in regime.cached
    encode: Callable[[str], np.ndarray]  # text -> int32 text ids (the tokenizer)
    layout: VocabLayout  # the unified vocabulary (specials, audio code offset)
    rng: np.random.Generator | None  # the example's generator in training; None at eval


class Regime(Protocol):
    name: str
    required_texts: tuple[str, ...]
    audio_input: bool
    cached: tuple[str, ...]

    def stream(self, ex: ExampleInputs) -> Stream | Skip: ...

    def reference(self, ex: ExampleInputs) -> dict: ...


def check_regime(regime) -> None:
    """TypeError/ValueError naming the member when `regime` does not fit the protocol."""
    members = ("name", "required_texts", "audio_input", "cached", "stream", "reference")
    missing = [m for m in members if not hasattr(regime, m)]
    if missing:
        raise TypeError(f"regime: expected a Regime (data_pipelines.regime; e.g. a mode's "
                        f"AsrRegime()), got {type(regime).__name__} {regime!r:.60} without "
                        f"{missing}")
    for member, kind in (("name", str), ("required_texts", tuple), ("audio_input", bool),
                         ("cached", tuple)):
        value = getattr(regime, member, None)
        if not isinstance(value, kind):
            raise TypeError(f"regime {type(regime).__name__}.{member}: expected "
                            f"{kind.__name__}, got {value!r}")
    for method in ("stream", "reference"):
        if not callable(getattr(regime, method, None)):
            raise TypeError(f"regime {regime.name!r}: expected a method {method}(ex)")
    input_wave = getattr(regime, "input_wave", None)
    if input_wave is not None and not (callable(input_wave) and regime.audio_input):
        raise TypeError(f"regime {regime.name!r}.input_wave: expected a method input_wave("
                        f"record, rng) of a regime with audio_input=True, got {input_wave!r} "
                        f"(audio_input={regime.audio_input})")
    accepts = getattr(regime, "accepts", None)
    if accepts is not None and not callable(accepts):
        raise TypeError(f"regime {regime.name!r}.accepts: expected a method accepts(raw, "
                        f"fields) -> bool or no such member, got {accepts!r}")
    known = {f.name for f in dataclasses.fields(FieldMap) if f.name not in ("audio",
                                                                            "sample_rate")}
    unknown = [t for t in regime.required_texts if t not in known]
    if unknown:
        raise ValueError(f"regime {regime.name!r}.required_texts: expected FieldMap text "
                         f"attributes {sorted(known)}, got {unknown}")
