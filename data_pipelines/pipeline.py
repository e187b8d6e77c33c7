"""Grain pipelines per task: records -> examples -> packed fixed-shape batches.

    it = make_train_iterator("asr", data_dir=DIR, split="train", layout=layout)
    batch = next(it)            # the batch contract (see docs/data.md), numpy, fixed shapes
    state = it.get_state()      # JSON-able; it.set_state(state) -> the exact next batch

Train graph:  source (TFDS split) -> host shard [i::n] -> shuffle(seed) -> repeat(epochs)
  -> random_map(ExampleBuilder) -> to_iter_dataset -> PackAndBatch -> mp_prefetch(workers).
With workers, each worker packs its own slice: batches depend on num_workers (deterministic
for a given count), and a state restores only under the same count.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np

from chorus.audio import mel
from chorus.audio.resample import SAMPLE_RATE
from chorus.audio.text import normalize_text
from chorus.vocab import VocabLayout
from data_pipelines import streams
from data_pipelines.augment import NO_AUGMENT, AugmentConfig, augment
from data_pipelines.packing import SKIP_KEY, SKIPPED_KEY, BatchShape, PackAndBatchIterDataset
from data_pipelines.records import SKIP_REASONS, AudioLimits, Record, Skip, read_record
from data_pipelines.sources import DEFAULT_FIELDS, FieldMap, field_names, open_source
from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer

TASKS = ("asr", "tts", "dialogue")
ASR_TARGETS = ("raw", "normalized")
AudioToCodes = Callable[[np.ndarray, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    """How one record becomes one example (task, sizes, text handling, augmentation)."""

    task: str
    seq_len: int = 256
    max_frames: int = 800  # T: 8 s of 10 ms frames
    asr_target: str = "raw"  # "normalized": train ASR on normalize_text(transcript)
    truncate_long: bool = False
    control_dropout: float = 0.0  # TTS: chance to drop the instruction / the speaker
    augment: AugmentConfig = NO_AUGMENT  # waveform augmentation of audio inputs (ASR, dialogue)
    fields: FieldMap = FieldMap()

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        if self.asr_target not in ASR_TARGETS:
            raise ValueError(f"asr_target: expected one of {ASR_TARGETS}, got "
                             f"{self.asr_target!r}")
        if self.seq_len < 8:
            raise ValueError(f"seq_len: expected >= 8, got {self.seq_len}")
        if self.max_frames < 8 or self.max_frames % 8:
            raise ValueError(f"max_frames: expected a positive multiple of 8, got "
                             f"{self.max_frames}")
        if not 0 <= self.control_dropout <= 1:
            raise ValueError(f"control_dropout: expected in [0, 1], got {self.control_dropout}")

    @property
    def limits(self) -> AudioLimits:
        return AudioLimits(max_seconds=self.max_frames * mel.HOP_LENGTH / SAMPLE_RATE,
                           truncate_long=self.truncate_long)

    @property
    def required_texts(self) -> tuple[str, ...]:
        return ("persona", "answer") if self.task == "dialogue" else ()


def _speaker_text(speaker: str) -> str:
    return f"speaker {speaker}" if speaker.isdigit() else speaker


class ExampleBuilder:
    """record dict -> packed-ready example dict, or {"skip": reason}. Picklable."""

    def __init__(self, config: ExampleConfig, layout: VocabLayout, tokenizer: TextTokenizer,
                 audio_to_codes: AudioToCodes | None = None):
        if tokenizer.vocab_size > layout.text_size:
            raise ValueError(f"tokenizer vocab_size {tokenizer.vocab_size} exceeds "
                             f"layout.text_size {layout.text_size}; text ids must stay below it")
        if config.task == "tts" and audio_to_codes is None:
            raise ValueError("task 'tts': expected an audio_to_codes(wave, sr) callable for the "
                             "audio targets (e.g. data_pipelines.codes.EnergyCodes as a "
                             "stand-in, or the codec's tokenizer), got None")
        self.config, self.layout, self.tokenizer = config, layout, tokenizer
        self.audio_to_codes = audio_to_codes

    # ------------------------------------------------------------------ shared steps

    def _record(self, raw: dict) -> Record | Skip:
        return read_record(raw, self.config.fields, self.config.limits,
                           self.config.required_texts)

    def _features(self, wave: np.ndarray) -> np.ndarray | Skip:
        feats = mel.log_mel(wave)
        if len(feats) == 0:
            return Skip("empty_audio", "shorter than one 10 ms frame")
        return feats

    def _codes(self, wave: np.ndarray) -> np.ndarray:
        codes = np.asarray(self.audio_to_codes(wave, SAMPLE_RATE))
        if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"audio_to_codes: expected a 1-D integer array, got "
                             f"{codes.dtype}{codes.shape}")
        return codes

    def _stream(self, rec: Record, wave: np.ndarray, rng: np.random.Generator | None):
        """(stream, mel features or None) for this task."""
        enc = self.tokenizer.encode
        if self.config.task == "tts":
            drop = self.config.control_dropout
            instruction = rec.instruction
            speaker = _speaker_text(rec.speaker)
            if rng is not None and drop:
                instruction = "" if rng.random() < drop else instruction
                speaker = "" if rng.random() < drop else speaker
            stream = streams.tts_stream(self.layout, enc(instruction), enc(speaker),
                                        enc(rec.tagged_text or rec.text), self._codes(wave))
            return stream, None
        feats = self._features(wave)
        if isinstance(feats, Skip):
            return feats, None
        if self.config.task == "asr":
            text = rec.text if self.config.asr_target == "raw" else normalize_text(rec.text)
            return streams.asr_stream(self.layout, len(feats), enc(text)), feats
        return streams.dialogue_stream(self.layout, enc(rec.persona), len(feats),
                                       enc(rec.answer)), feats

    # ------------------------------------------------------------------ entry points

    def __call__(self, raw: dict, rng: np.random.Generator) -> dict:
        """Training example (augmentation on) or {"skip": reason}."""
        rec = self._record(raw)
        if isinstance(rec, Skip):
            return {SKIP_KEY: rec.reason}
        wave = rec.wave
        # Augment audio *inputs* only: TTS targets must stay the clean reference.
        if self.config.augment.enabled and self.config.task != "tts":
            wave = augment(wave, self.config.augment, rng)
            wave = wave[: int(self.config.limits.max_seconds * SAMPLE_RATE)]
        stream, feats = self._stream(rec, wave, rng)
        if isinstance(stream, Skip):
            return {SKIP_KEY: stream.reason}
        if len(stream.tokens) > self.config.seq_len:
            return {SKIP_KEY: "too_long_for_seq_len"}
        clips = np.zeros((0, 0, mel.N_MELS), np.float32) if feats is None else feats[None]
        return {"tokens": stream.tokens, "targets": stream.targets,
                "loss_mask": stream.loss_mask, "audio_features": clips,
                "audio_mask": np.ones(clips.shape[:2], bool)}

    def eval_example(self, raw: dict) -> dict | Skip:
        """Unpacked example for decoding / eval (no augmentation)."""
        rec = self._record(raw)
        if isinstance(rec, Skip):
            return rec
        stream, feats = self._stream(rec, rec.wave, None)
        if isinstance(stream, Skip):
            return stream
        t = self.config.max_frames
        audio = np.zeros((1, t, mel.N_MELS), np.float32)
        mask = np.zeros((1, t), bool)
        if feats is not None:
            audio[0, : len(feats)], mask[0, : len(feats)] = feats, True
        reference_ids = stream.tokens[stream.prompt_length:]
        reference_ids = reference_ids[reference_ids != self.layout.special(
            "<tts_end>" if self.config.task == "tts" else "<eos>")]
        reference_text = {"asr": rec.text if self.config.asr_target == "raw"
                          else normalize_text(rec.text),
                          "tts": rec.tagged_text or rec.text, "dialogue": rec.answer}
        out = {"id": rec.id, "prompt_tokens": stream.tokens[: stream.prompt_length],
               "audio_features": audio, "audio_mask": mask,
               "reference_text": reference_text[self.config.task],
               "reference_ids": reference_ids.astype(np.int32), "transcript": rec.text}
        if self.config.task == "tts":
            out["reference_audio"] = rec.wave
            out["instruction"], out["speaker"] = rec.instruction, rec.speaker
        if self.config.task == "dialogue":
            out["persona"] = rec.persona
        return out


# ----------------------------------------------------------------------------- iterators


def _skip_counts(vector) -> dict[str, int]:
    return {reason: int(n) for reason, n in zip(SKIP_REASONS, vector, strict=True)}


def format_skips(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "skipped 0 examples"
    detail = ", ".join(f"{r}={n}" for r, n in counts.items() if n)
    return f"skipped {total} examples: {detail}"


class DataIterator(Iterator[dict]):
    """Batches in the batch contract; get_state()/set_state() JSON-able; counts skips."""

    def __init__(self, dataset: grain.IterDataset, description: str):
        self._iter = iter(dataset)
        self._skipped = np.zeros(len(SKIP_REASONS), np.int64)
        self.description = description

    def __next__(self) -> dict[str, np.ndarray]:
        try:
            batch = next(self._iter)
        except StopIteration:
            print(f"[data] {self.description}: end of data; {format_skips(self.skipped)}",
                  file=sys.stderr)
            raise
        self._skipped += batch.pop(SKIPPED_KEY)
        return batch

    @property
    def skipped(self) -> dict[str, int]:
        """Examples skipped so far (restored with the state), by reason."""
        return _skip_counts(self._skipped)

    def get_state(self) -> dict[str, Any]:
        state = {"grain": self._iter.get_state(), "skipped": self.skipped}
        return json.loads(json.dumps(state, default=_to_json))

    def set_state(self, state: dict[str, Any]) -> None:
        self._iter.set_state(state["grain"])
        self._skipped = np.array([state["skipped"].get(r, 0) for r in SKIP_REASONS], np.int64)

    def close(self) -> None:
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _to_json(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError(f"iterator state: cannot serialize {type(value).__name__}")


class EvalIterator(Iterator[dict]):
    """One pass over a split, unpacked: per-example eval dicts; bad records counted."""

    def __init__(self, source: Sequence[dict], builder: ExampleBuilder, indices: range,
                 description: str):
        self._source, self._builder, self._indices = source, builder, indices
        self._next = 0
        self._skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.description = description

    def __next__(self) -> dict:
        while self._next < len(self._indices):
            index = self._indices[self._next]
            self._next += 1
            example = self._builder.eval_example(self._source[index])
            if isinstance(example, Skip):
                self._skipped[example.reason] += 1
                continue
            return example
        print(f"[data] {self.description}: end of data; {format_skips(self.skipped)}",
              file=sys.stderr)
        raise StopIteration

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self._skipped)

    def get_state(self) -> dict[str, Any]:
        return {"next": self._next, "skipped": self.skipped}

    def set_state(self, state: dict[str, Any]) -> None:
        self._next = int(state["next"])
        self._skipped = dict.fromkeys(SKIP_REASONS, 0) | state["skipped"]


# ----------------------------------------------------------------------------- constructors


def _host_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax  # only for the defaults: the host's place among the processes

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index: expected 0 <= shard_index < shard_count={shard_count}, "
                         f"got {shard_index}")
    return shard_index, shard_count


def _open(data_dir: str | None, split: str, dataset_name: str, source: Sequence[dict] | None,
          fields: FieldMap, task: str) -> Sequence[dict]:
    if source is None:
        if data_dir is None:
            raise ValueError("data_dir: expected the TFDS data_dir (or pass source=...), got None")
        source = open_source(dataset_name, data_dir, split)
    if len(source) == 0:
        raise ValueError(f"dataset {dataset_name!r} split {split!r}: expected records, got 0")
    names = set(field_names(source))
    required = [fields.audio, fields.text]
    if task == "dialogue":
        required += [fields.persona, fields.answer]
    missing = [f for f in required if f not in names]
    if missing:
        raise ValueError(f"dataset {dataset_name!r} split {split!r}: task {task!r} needs fields "
                         f"{missing} (FieldMap), dataset has {sorted(names)}")
    if task == "dialogue":  # only records that are dialogue turns (one pass over the split)
        source = Subset(source, [i for i in range(len(source))
                                 if _nonempty(source[i].get(fields.persona))])
        if len(source) == 0:
            raise ValueError(f"dataset {dataset_name!r} split {split!r}: no record has a "
                             f"non-empty {fields.persona!r} field (dialogue turns)")
    return source


def _nonempty(value) -> bool:
    return value is not None and len(value) > 0


class Subset(Sequence):
    """The records of `source` at `indices`, in that order (picklable for grain workers)."""

    def __init__(self, source: Sequence[dict], indices: list[int]):
        self.source, self.indices = source, list(indices)
        self.field_names = field_names(source)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.source[self.indices[index]]


def _tokenizer(tokenizer_path: str | None, data_dir: str | None) -> TextTokenizer:
    if tokenizer_path is None:
        if data_dir is None:
            raise ValueError("tokenizer_path: expected a path (or data_dir holding "
                             f"{TOKENIZER_FILENAME}), got None")
        tokenizer_path = os.path.join(data_dir, TOKENIZER_FILENAME)
    return TextTokenizer.from_file(tokenizer_path)


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; programs without absl.app never parse them."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_train_iterator(task: str, data_dir: str | None, split: str, layout: VocabLayout,
                        tokenizer_path: str | None = None, batch_size: int = 8,
                        seq_len: int = 256, seed: int = 0, shard_index: int | None = None,
                        shard_count: int | None = None, num_workers: int = 0, *,
                        dataset_name: str = "chorus_speech", max_clips: int = 4,
                        max_frames: int = 800, fields: FieldMap = DEFAULT_FIELDS,
                        audio_to_codes: AudioToCodes | None = None,
                        augment_config: AugmentConfig = NO_AUGMENT,
                        num_epochs: int | None = None, shuffle: bool = True,
                        asr_target: str = "raw", truncate_long: bool = False,
                        control_dropout: float = 0.0,
                        source: Sequence[dict] | None = None) -> DataIterator:
    """Packed fixed-shape training batches for `task` ("asr" | "tts" | "dialogue").

    data_dir/split/dataset_name: a prepared TFDS dataset (default: our `chorus_speech`);
    or pass `source` (any random-access sequence of record dicts) instead.
    tokenizer_path: defaults to `<data_dir>/tokenizer.model`.
    shard_index/shard_count: this host's shard; default jax.process_index()/process_count().
    num_epochs: None repeats forever; with a number the iterator ends after that many passes
    (the last batch may have empty rows).
    """
    config = ExampleConfig(task=task, seq_len=seq_len, max_frames=max_frames,
                           asr_target=asr_target, truncate_long=truncate_long,
                           control_dropout=control_dropout, augment=augment_config,
                           fields=fields)
    shape = BatchShape(batch_size=batch_size, seq_len=seq_len, max_clips=max_clips,
                       max_frames=max_frames, num_mels=mel.N_MELS, pad_id=layout.pad_id)
    if num_workers < 0:
        raise ValueError(f"num_workers: expected >= 0, got {num_workers}")
    builder = ExampleBuilder(config, layout, _tokenizer(tokenizer_path, data_dir),
                             audio_to_codes)
    source = _open(data_dir, split, dataset_name, source, fields, task)
    shard_index, shard_count = _host_shard(shard_index, shard_count)
    ds = grain.MapDataset.source(source)[shard_index::shard_count]
    if shuffle:
        ds = ds.shuffle(seed)
    ds = ds.repeat(num_epochs).random_map(builder, seed=seed)
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4 *
                                                   batch_size))
    iter_ds = PackAndBatchIterDataset(iter_ds, shape)
    if num_workers:
        _ensure_absl_flags_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=num_workers, per_worker_buffer_size=2))
    return DataIterator(iter_ds, f"{task} train {dataset_name}/{split} shard "
                                 f"{shard_index}/{shard_count}")


def make_eval_iterator(task: str, data_dir: str | None, split: str, layout: VocabLayout,
                       tokenizer_path: str | None = None, shard_index: int | None = None,
                       shard_count: int | None = None, *, dataset_name: str = "chorus_speech",
                       max_frames: int = 800, seq_len: int = 256,
                       fields: FieldMap = DEFAULT_FIELDS,
                       audio_to_codes: AudioToCodes | None = None, asr_target: str = "raw",
                       truncate_long: bool = False, max_examples: int | None = None,
                       source: Sequence[dict] | None = None) -> EvalIterator:
    """One ordered pass over `split` of this host's shard, one example dict at a time:
    prompt_tokens (up to <transcript> / <tts_start> / <assistant>), audio_features
    [1, T, 128] + audio_mask [1, T], reference_text, reference_ids, id, transcript
    (+ reference_audio, instruction, speaker for TTS; persona for dialogue)."""
    config = ExampleConfig(task=task, seq_len=seq_len, max_frames=max_frames,
                           asr_target=asr_target, truncate_long=truncate_long, fields=fields)
    builder = ExampleBuilder(config, layout, _tokenizer(tokenizer_path, data_dir),
                             audio_to_codes)
    source = _open(data_dir, split, dataset_name, source, fields, task)
    shard_index, shard_count = _host_shard(shard_index, shard_count)
    indices = range(shard_index, len(source), shard_count)
    if max_examples is not None:
        indices = indices[:max_examples]
    return EvalIterator(source, builder, indices,
                        f"{task} eval {dataset_name}/{split} shard {shard_index}/{shard_count}")
