"""Token pipelines through a regime: records -> the regime's streams -> packed fixed-shape batches.

    it = make_train_iterator(regime, data_dir=DIR, split="train", layout=layout)
    batch = next(it)            # the batch contract (see docs/data.md), numpy, fixed shapes
    state = it.get_state()      # JSON-able; it.set_state(state) -> the exact next batch

The graph is `graph.batched_dataset` (shard, shuffle, repeat, workers) with `ExampleBuilder`
as the per-record step and `packing.PackAndBatchIterDataset` as the batch stage. The mode is
only the `regime` (`data_pipelines.regime`): which texts a record needs, whether its audio
is an input clip, which cached arrays it reads, and its token stream. Per record:

    read_record (validation, skips by reason) -> cache entries (regime.cached)
      -> augment the wave + log-mel (regime.audio_input) -> regime.stream(ExampleInputs)
      -> at most seq_len tokens, <audio> placeholders = the clip's adaptor frames
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from chorus.audio import mel
from chorus.audio.resample import SAMPLE_RATE
from chorus.vocab import VocabLayout, num_audio_placeholders
from data_pipelines.augment import NO_AUGMENT, AugmentConfig, augment
from data_pipelines.graph import (
    DataIterator,
    EvalIterator,
    RecordExamples,
    batched_dataset,
    describe,
    host_shard,
    open_records,
)
from data_pipelines.packing import BatchShape, PackAndBatchIterDataset
from data_pipelines.record_cache import RecordCache
from data_pipelines.records import AudioLimits, Record, Skip
from data_pipelines.regime import ExampleInputs, Regime, check_regime
from data_pipelines.sources import DEFAULT_FIELDS, FieldMap
from data_pipelines.streams import Stream
from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer

REFERENCE_KEYS = ("reference_text", "reference_ids")  # regime.reference must give these


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    """Sizes and record handling shared by every regime."""

    seq_len: int = 256
    max_frames: int = 800  # T: 8 s of 10 ms frames
    truncate_long: bool = False
    augment: AugmentConfig = NO_AUGMENT  # waveform augmentation of audio inputs

    def __post_init__(self):
        if self.seq_len < 8:
            raise ValueError(f"seq_len: expected >= 8, got {self.seq_len}")
        if self.max_frames < 8 or self.max_frames % 8:
            raise ValueError(f"max_frames: expected a positive multiple of 8, got "
                             f"{self.max_frames}")

    def limits(self, audio_input: bool) -> AudioLimits:
        """An input clip must fit T frames; audio that is not an input (a TTS target, as
        codes) is bounded by seq_len only."""
        if not audio_input:
            return AudioLimits(max_seconds=None)
        return AudioLimits(max_seconds=self.max_frames * mel.HOP_LENGTH / SAMPLE_RATE,
                           truncate_long=self.truncate_long)


class ExampleBuilder:
    """Record -> the regime's stream -> a packed-ready example (train) or an eval dict.
    Picklable (grain workers get a copy)."""

    def __init__(self, regime: Regime, config: ExampleConfig, layout: VocabLayout,
                 tokenizer: TextTokenizer, cache: RecordCache | None = None):
        check_regime(regime)
        if tokenizer.vocab_size > layout.text_size:
            raise ValueError(f"tokenizer vocab_size {tokenizer.vocab_size} exceeds "
                             f"layout.text_size {layout.text_size}; text ids must stay below it")
        if regime.cached:
            if cache is None:
                raise ValueError(f"regime {regime.name!r} reads cached arrays "
                                 f"{list(regime.cached)}: expected cache=RecordCache.open("
                                 f"data_dir, producer_key, split), got None")
            cache.require(regime.cached, f"regime {regime.name!r}")
        self.regime, self.config, self.layout = regime, config, layout
        self.tokenizer, self.cache = tokenizer, cache

    def _inputs(self, rec: Record, rng: np.random.Generator | None) -> ExampleInputs | Skip:
        cached = {}
        if self.regime.cached:
            cached = self.cache.get(rec.id, self.regime.cached) if rec.id else None
            if cached is None:
                return Skip("missing_cache_entry", f"record {rec.id!r} not in {self.cache}")
        features = None
        wave = self._input_wave(rec, rng) if self.regime.audio_input else None
        if isinstance(wave, Skip):
            return wave
        if wave is not None:
            if rng is not None and self.config.augment.enabled:
                wave = augment(wave, self.config.augment, rng)
                wave = wave[: self.config.max_frames * mel.HOP_LENGTH]  # speed may lengthen
            features = mel.log_mel(wave)
            if len(features) == 0:
                return Skip("empty_audio", "shorter than one 10 ms frame")
        return ExampleInputs(record=rec, features=features, cached=cached,
                             encode=self.tokenizer.encode, layout=self.layout, rng=rng)

    def _input_wave(self, rec: Record, rng: np.random.Generator | None):
        """The wave of the input clip: the regime's `input_wave` (None: no clip for this
        example), else the record's own audio."""
        input_wave = getattr(self.regime, "input_wave", None)
        if input_wave is None:
            return rec.wave
        wave = input_wave(rec, rng)
        if wave is None or isinstance(wave, Skip):
            return wave
        return np.asarray(wave, np.float32)[: self.config.max_frames * mel.HOP_LENGTH]

    def _stream(self, ex: ExampleInputs) -> Stream | Skip:
        stream = self.regime.stream(ex)
        if isinstance(stream, Skip):
            return stream
        frames = 0 if ex.features is None else len(ex.features)
        placeholders = int((stream.tokens == self.layout.audio_placeholder_id).sum())
        if placeholders != num_audio_placeholders(frames):
            raise ValueError(f"regime {self.regime.name!r}: stream of record {ex.record.id!r} "
                             f"has {placeholders} <audio> placeholders, expected "
                             f"{num_audio_placeholders(frames)} for its clip of {frames} "
                             f"frames (streams.audio_placeholders)")
        if len(stream.tokens) > self.config.seq_len:
            return Skip("too_long_for_seq_len", f"{len(stream.tokens)} tokens")
        return stream

    def _example(self, rec: Record, rng: np.random.Generator | None):
        """(inputs, stream) of the record, or Skip."""
        ex = self._inputs(rec, rng)
        if isinstance(ex, Skip):
            return ex
        stream = self._stream(ex)
        return stream if isinstance(stream, Skip) else (ex, stream)

    def train_example(self, rec: Record, rng: np.random.Generator) -> dict | Skip:
        """Training example (augmentation on) or Skip."""
        example = self._example(rec, rng)
        if isinstance(example, Skip):
            return example
        ex, stream = example
        clips = (np.zeros((0, 0, mel.N_MELS), np.float32) if ex.features is None
                 else ex.features[None])
        return {"tokens": stream.tokens, "targets": stream.targets,
                "loss_mask": stream.loss_mask, "audio_features": clips,
                "audio_mask": np.ones(clips.shape[:2], bool)}

    def eval_example(self, rec: Record, rng: None = None) -> dict | Skip:
        """Unpacked example for decoding / eval (no augmentation, ex.rng = None)."""
        example = self._example(rec, None)
        if isinstance(example, Skip):
            return example
        ex, stream = example
        t = self.config.max_frames
        audio = np.zeros((1, t, mel.N_MELS), np.float32)
        mask = np.zeros((1, t), bool)
        if ex.features is not None:
            audio[0, : len(ex.features)], mask[0, : len(ex.features)] = ex.features, True
        reference = self.regime.reference(ex)
        missing = [k for k in REFERENCE_KEYS if k not in reference]
        if missing:
            raise ValueError(f"regime {self.regime.name!r}.reference: expected keys "
                             f"{list(REFERENCE_KEYS)}, missing {missing}")
        return {"id": rec.id, "prompt_tokens": stream.tokens[: stream.prompt_length],
                "audio_features": audio, "audio_mask": mask, "transcript": rec.text,
                **reference}


# ----------------------------------------------------------------------------- constructors


def _tokenizer(tokenizer_path: str | None, data_dir: str | None) -> TextTokenizer:
    if tokenizer_path is None:
        if data_dir is None:
            raise ValueError("tokenizer_path: expected a path (or data_dir holding "
                             f"{TOKENIZER_FILENAME}), got None")
        tokenizer_path = os.path.join(os.path.expanduser(data_dir), TOKENIZER_FILENAME)
    return TextTokenizer.from_file(tokenizer_path)


def _own_clip(regime: Regime) -> bool:
    """The record's own audio is the input clip (so it must fit max_frames)."""
    return regime.audio_input and getattr(regime, "input_wave", None) is None


def _setup(regime: Regime, data_dir: str | None, split: str, layout: VocabLayout,
           tokenizer_path: str | None, dataset_name: str, source: Sequence[dict] | None,
           cache: RecordCache | None, config: ExampleConfig, fields: FieldMap):
    """(builder, records) shared by the train and eval constructors."""
    builder = ExampleBuilder(regime, config, layout, _tokenizer(tokenizer_path, data_dir), cache)
    if cache is not None and cache.meta.split != split:
        raise ValueError(f"cache: expected the {split!r} split's RecordCache, got "
                         f"{cache.meta.split!r} ({cache.path})")

    def accepts(raw: dict) -> bool:
        return regime.accepts(raw, fields)  # the record's keys are read through `fields`

    records = open_records(data_dir, split, dataset_name, source, fields,
                           regime.required_texts,
                           accepts if getattr(regime, "accepts", None) is not None else None,
                           what=f"regime {regime.name!r}")
    return builder, records


def make_train_iterator(regime: Regime, data_dir: str | None, split: str, layout: VocabLayout,
                        tokenizer_path: str | None = None, batch_size: int = 8,
                        seq_len: int = 256, seed: int = 0, shard_index: int | None = None,
                        shard_count: int | None = None, num_workers: int = 0, *,
                        dataset_name: str = "chorus_speech", max_clips: int = 4,
                        max_frames: int = 800, fields: FieldMap = DEFAULT_FIELDS,
                        augment_config: AugmentConfig = NO_AUGMENT,
                        num_epochs: int | None = None, shuffle: bool = True,
                        truncate_long: bool = False, cache: RecordCache | None = None,
                        source: Sequence[dict] | None = None) -> DataIterator:
    """Packed fixed-shape training batches of `regime`'s token streams.

    data_dir/split/dataset_name: a prepared TFDS dataset (default: our `chorus_speech`);
    or pass `source` (any random-access sequence of record dicts) instead.
    tokenizer_path: defaults to `<data_dir>/tokenizer.model`.
    shard_index/shard_count: this host's shard; default jax.process_index()/process_count().
    num_workers: grain worker processes for the per-record work; the batches are the same
    for any count, a state restores under the count it was saved with.
    num_epochs: None repeats forever; with a number the iterator ends after that many passes
    (the last batch may have empty rows).
    cache: the split's RecordCache when the regime reads cached arrays (regime.cached).
    """
    config = ExampleConfig(seq_len=seq_len, max_frames=max_frames, truncate_long=truncate_long,
                           augment=augment_config)
    shape = BatchShape(batch_size=batch_size, seq_len=seq_len, max_clips=max_clips,
                       max_frames=max_frames, num_mels=mel.N_MELS, pad_id=layout.pad_id)
    builder, records = _setup(regime, data_dir, split, layout, tokenizer_path, dataset_name,
                              source, cache, config, fields)
    shard = host_shard(shard_index, shard_count)
    record_fn = RecordExamples(builder.train_example, fields, config.limits(_own_clip(regime)),
                               regime.required_texts)

    def stage(examples, guard_limit):
        return PackAndBatchIterDataset(examples, shape, guard_limit)

    ds = batched_dataset(records, record_fn, stage, seed=seed, shard=shard,
                         num_workers=num_workers, num_epochs=num_epochs, shuffle=shuffle,
                         buffer=4 * batch_size)
    return DataIterator(ds, describe(f"{regime.name} train", dataset_name, split, shard),
                        num_workers)


def make_eval_iterator(regime: Regime, data_dir: str | None, split: str, layout: VocabLayout,
                       tokenizer_path: str | None = None, shard_index: int | None = None,
                       shard_count: int | None = None, *, dataset_name: str = "chorus_speech",
                       max_frames: int = 800, seq_len: int = 256,
                       fields: FieldMap = DEFAULT_FIELDS, truncate_long: bool = False,
                       max_examples: int | None = None, cache: RecordCache | None = None,
                       source: Sequence[dict] | None = None) -> EvalIterator:
    """One ordered pass over `split` of this host's shard, one example dict at a time:
    id, prompt_tokens (the stream before its first supervised token), audio_features
    [1, T, 128] + audio_mask [1, T] (all False without an audio input), transcript (the
    record's text), and the regime's `reference(ex)` fields (reference_text, reference_ids,
    ...)."""
    config = ExampleConfig(seq_len=seq_len, max_frames=max_frames, truncate_long=truncate_long)
    builder, records = _setup(regime, data_dir, split, layout, tokenizer_path, dataset_name,
                              source, cache, config, fields)
    shard = host_shard(shard_index, shard_count)
    indices = range(shard[0], len(records), shard[1])
    if max_examples is not None:
        indices = indices[:max_examples]
    record_fn = RecordExamples(builder.eval_example, fields, config.limits(_own_clip(regime)),
                               regime.required_texts)
    return EvalIterator(records, lambda raw: record_fn.example(raw, None), indices,
                        describe(f"{regime.name} eval", dataset_name, split, shard))
