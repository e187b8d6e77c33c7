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
import os
from collections.abc import Callable, Sequence

import numpy as np

from chorus.audio import mel
from chorus.audio.resample import SAMPLE_RATE
from chorus.audio.text import normalize_text
from chorus.vocab import VocabLayout
from data_pipelines import streams
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
from data_pipelines.records import AudioLimits, Record, Skip
from data_pipelines.sources import DEFAULT_FIELDS, FieldMap
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

    def train_example(self, rec: Record, rng: np.random.Generator) -> dict | Skip:
        """Training example (augmentation on) or Skip."""
        wave = rec.wave
        # Augment audio *inputs* only: TTS targets must stay the clean reference.
        if self.config.augment.enabled and self.config.task != "tts":
            wave = augment(wave, self.config.augment, rng)
            wave = wave[: int(self.config.limits.max_seconds * SAMPLE_RATE)]
        stream, feats = self._stream(rec, wave, rng)
        if isinstance(stream, Skip):
            return stream
        if len(stream.tokens) > self.config.seq_len:
            return Skip("too_long_for_seq_len")
        clips = np.zeros((0, 0, mel.N_MELS), np.float32) if feats is None else feats[None]
        return {"tokens": stream.tokens, "targets": stream.targets,
                "loss_mask": stream.loss_mask, "audio_features": clips,
                "audio_mask": np.ones(clips.shape[:2], bool)}

    def eval_example(self, rec: Record, rng=None) -> dict | Skip:
        """Unpacked example for decoding / eval (no augmentation)."""
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


# ----------------------------------------------------------------------------- constructors


def _tokenizer(tokenizer_path: str | None, data_dir: str | None) -> TextTokenizer:
    if tokenizer_path is None:
        if data_dir is None:
            raise ValueError("tokenizer_path: expected a path (or data_dir holding "
                             f"{TOKENIZER_FILENAME}), got None")
        tokenizer_path = os.path.join(data_dir, TOKENIZER_FILENAME)
    return TextTokenizer.from_file(tokenizer_path)


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
    builder = ExampleBuilder(config, layout, _tokenizer(tokenizer_path, data_dir),
                             audio_to_codes)
    source = _open(data_dir, split, dataset_name, source, fields, task)
    shard = host_shard(shard_index, shard_count)
    record_fn = RecordExamples(builder.train_example, fields, config.limits,
                               config.required_texts)

    def stage(examples, guard_limit):
        return PackAndBatchIterDataset(examples, shape, guard_limit)

    ds = batched_dataset(source, record_fn, stage, seed=seed, shard=shard,
                         num_workers=num_workers, num_epochs=num_epochs, shuffle=shuffle,
                         buffer=4 * batch_size)
    return DataIterator(ds, describe(f"{task} train", dataset_name, split, shard), num_workers)


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
    shard = host_shard(shard_index, shard_count)
    indices = range(shard[0], len(source), shard[1])
    if max_examples is not None:
        indices = indices[:max_examples]
    record_fn = RecordExamples(builder.eval_example, fields, config.limits,
                               config.required_texts)
    return EvalIterator(source, lambda raw: record_fn.example(raw, None), indices,
                        describe(f"{task} eval", dataset_name, split, shard))


def _open(data_dir, split, dataset_name, source, fields, task):
    required = ("persona", "answer") if task == "dialogue" else ()
    accepts = (lambda raw: bool(raw.get(fields.persona))) if task == "dialogue" else None
    return open_records(data_dir, split, dataset_name, source, fields, required, accepts,
                        what=f"task {task!r}")
