"""Data for chorus: eSpeak NG synthesis, text generation, TFDS datasets, grain pipelines.

Mode-agnostic: a mode hands the pipelines its regime (token layout) or its example_fn and
batch_fn; nothing here names ASR, TTS or dialogue.

The public entry points, imported lazily (so `import data_pipelines` stays cheap and pulls in
neither JAX nor TFDS):

    make_train_iterator(regime, data_dir, split, layout, ...)  packed batches + get/set_state
    make_eval_iterator(regime, data_dir, split, layout, ...)   unpacked per-example dicts
    make_example_iterator(example_fn, batch_fn, batch_size, data_dir, split, ...)
                                                             a mode's own (non-token) batches
    Regime, ExampleInputs                                    what a mode gives the pipeline
    Stream, assemble                                         token streams from parts
    RecordCache, write_record_cache, ArraySpec               per-record arrays of a model
    Record, Skip, SKIP_REASONS                               a validated record / why not
    synthesize(text, voice, rate, pitch, volume, seed)       16 kHz float32 wave + metadata
    normalize_text(text)                                     the WER/CER normalization
    FieldMap, LIBRISPEECH_FIELDS                             which record keys hold what
    TextTokenizer.from_file(path)                            the SentencePiece text tokenizer

See docs/data.md.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "make_train_iterator": "data_pipelines.pipeline",
    "make_eval_iterator": "data_pipelines.pipeline",
    "make_example_iterator": "data_pipelines.graph",
    "Regime": "data_pipelines.regime",
    "ExampleInputs": "data_pipelines.regime",
    "Stream": "data_pipelines.streams",
    "assemble": "data_pipelines.streams",
    "RecordCache": "data_pipelines.record_cache",
    "write_record_cache": "data_pipelines.record_cache",
    "ArraySpec": "data_pipelines.record_cache",
    "Record": "data_pipelines.records",
    "Skip": "data_pipelines.records",
    "SKIP_REASONS": "data_pipelines.records",
    "synthesize": "data_pipelines.synthesis",
    "normalize_text": "chorus.audio.text",
    "FieldMap": "data_pipelines.sources",
    "LIBRISPEECH_FIELDS": "data_pipelines.sources",
    "TextTokenizer": "data_pipelines.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'data_pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
