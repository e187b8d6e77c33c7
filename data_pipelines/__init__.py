"""Data for chorus: eSpeak NG synthesis, text generation, TFDS datasets, grain pipelines.

The public entry points, imported lazily (so `import data_pipelines` stays cheap and pulls in
neither JAX nor TFDS):

    make_train_iterator(task, data_dir, split, layout, ...)  packed batches + get/set_state
    make_eval_iterator(task, data_dir, split, layout, ...)   unpacked per-example dicts
    make_example_iterator(example_fn, batch_fn, batch_size, data_dir, split, ...)
                                                             a mode's own (non-token) batches
    synthesize(text, voice, rate, pitch, volume, seed)       16 kHz float32 wave + metadata
    normalize_text(text)                                     the WER/CER normalization
    FieldMap, LIBRISPEECH_FIELDS                             which record keys hold what
    EnergyCodes(num_codes)                                   stand-in audio_to_codes for TTS
    TextTokenizer.from_file(path)                            the SentencePiece text tokenizer

See docs/data.md.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "make_train_iterator": "data_pipelines.pipeline",
    "make_eval_iterator": "data_pipelines.pipeline",
    "make_example_iterator": "data_pipelines.graph",
    "synthesize": "data_pipelines.synthesis",
    "normalize_text": "chorus.audio.text",
    "FieldMap": "data_pipelines.sources",
    "LIBRISPEECH_FIELDS": "data_pipelines.sources",
    "EnergyCodes": "data_pipelines.codes",
    "TextTokenizer": "data_pipelines.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'data_pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
