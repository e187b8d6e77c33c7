"""The codec's training data: dataset records -> each stage's fixed-shape batches.

Every stage reads the train split of the dataset (`experiment.dataset`, default
`chorus_speech`) through `data_pipelines.make_example_iterator` (record validation, host
shards, shuffling, skip counting, checkpointable position), never the records of the
held-out voices:

    stage      one example (per record)                               batch
    speaker    normalized log-mel, a random crop of speaker.crop_frames  mel [B, crop, 128],
               + the speaker id (the CosFace class)                      mel_mask, speaker [B]
    tokenizer  the whole utterance's normalized log-mel (utterances      mel [B, max_frames,
               longer than tokenizer.max_frames are skipped) + its CTC   128], mel_mask,
               character labels                                          labels, label_mask
    flow       a crop of flow.crop_frames starting on a code boundary,   mel, mel_mask, codes,
               its codes and the utterance's speaker embedding, both     code_mask [B, crop/4],
               read from the corpus's RecordCache (corpus_codes.py)      speaker [B, E]
    vocoder    a random waveform crop of vocoder.segment_frames frames   wave [B, frames * hop]

Examples are plain numpy (no JAX in grain workers): the log-mel is `chorus.audio.mel`'s.
"""

from __future__ import annotations

import os

import numpy as np

from chorus.audio import mel as features
from chorus.codec import text
from chorus.codec.features import pad_batch
from chorus.codec.tokenizer import FRAMES_PER_CODE
from data_pipelines.graph import make_example_iterator
from data_pipelines.record_cache import RecordCache
from data_pipelines.records import DEFAULT_LIMITS, AudioLimits, Record, Skip, field_text
from data_pipelines.sources import DEFAULT_FIELDS
from experiments.codec.settings import CodecSettings


class NotHeldOut:
    """accepts(raw): records of voices the codec may train on (picklable)."""

    def __init__(self, heldout_speaker_ids: frozenset[str]):
        self.heldout = heldout_speaker_ids

    def __call__(self, raw: dict) -> bool:
        return field_text(raw, DEFAULT_FIELDS.speaker) not in self.heldout


def _crop(array: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of `length` along axis 0; a shorter array is returned whole."""
    if array.shape[0] <= length:
        return array
    start = int(rng.integers(0, array.shape[0] - length + 1))
    return array[start:start + length]


def _normalized_mel(settings: CodecSettings, record: Record) -> np.ndarray:
    return settings.mel.normalize(features.log_mel(record.wave)).astype(np.float32)


# ----------------------------------------------------------------------------- examples


class Examples:
    """example_fn(record, rng) -> dict | Skip and batch(examples) -> fixed-shape arrays of
    one stage; `batch_size` rows per batch (this host's share). Picklable (grain workers)."""

    limits = DEFAULT_LIMITS

    def __init__(self, settings: CodecSettings, batch_size: int):
        self.settings, self.batch_size = settings, batch_size


class SpeakerExamples(Examples):
    def __init__(self, settings: CodecSettings, batch_size: int):
        super().__init__(settings, batch_size)
        self.classes = settings.num_speaker_classes

    def __call__(self, record: Record, rng: np.random.Generator) -> dict:
        try:
            label = int(record.speaker)
        except ValueError:
            label = -1
        if not 0 <= label < self.classes:
            raise ValueError(f"record {record.id!r}: speaker: expected an id in [0, "
                             f"experiment.speaker_classes={self.classes}), got "
                             f"{record.speaker!r}")
        mel = _crop(_normalized_mel(self.settings, record), self.settings.speaker.crop_frames,
                    rng)
        return {"mel": mel, "speaker": label}

    def batch(self, examples: list[dict]) -> dict[str, np.ndarray]:
        rows = self.batch_size
        mel, mask = pad_batch([e["mel"] for e in examples], self.settings.speaker.crop_frames,
                              rows)
        speaker = np.zeros((rows,), np.int32)
        speaker[:len(examples)] = [e["speaker"] for e in examples]
        return {"mel": mel, "mel_mask": mask, "speaker": speaker}


def ctc_feasible(labels: np.ndarray, num_codes: int) -> bool:
    """CTC can align `labels` to `num_codes` frames: one per label, one blank per repeat."""
    repeats = int(np.sum(labels[1:] == labels[:-1])) if labels.size > 1 else 0
    return num_codes >= labels.size + repeats


class TokenizerExamples(Examples):
    def __init__(self, settings: CodecSettings, batch_size: int):
        super().__init__(settings, batch_size)
        # Utterances longer than the batch holds are skipped by the record reader.
        self.limits = AudioLimits(max_seconds=settings.tokenizer.max_frames
                                  * settings.mel.hop_length / settings.mel.sample_rate)

    def __call__(self, record: Record, rng: np.random.Generator) -> dict | Skip:
        labels = text.encode(record.text)
        if labels.size == 0:
            return Skip("empty_text", f"{record.text!r} has no CTC characters")
        mel = _normalized_mel(self.settings, record)
        codes = -(-mel.shape[0] // FRAMES_PER_CODE)
        if not ctc_feasible(labels, codes):
            return Skip("too_long_for_seq_len", f"{labels.size} characters do not fit "
                                                f"{codes} codes (CTC)")
        return {"mel": mel, "labels": labels}

    def batch(self, examples: list[dict]) -> dict[str, np.ndarray]:
        frames = self.settings.tokenizer.max_frames
        mel, mask = pad_batch([e["mel"] for e in examples], frames, self.batch_size)
        labels, label_mask = pad_batch([e["labels"] for e in examples],
                                       frames // FRAMES_PER_CODE, self.batch_size)
        return {"mel": mel, "mel_mask": mask, "labels": labels, "label_mask": label_mask}


class FlowExamples(Examples):
    """Crops aligned with their codes; codes and speaker embeddings from the RecordCache."""

    def __init__(self, settings: CodecSettings, batch_size: int, cache: RecordCache):
        super().__init__(settings, batch_size)
        cache.require(("codes", "speaker"), "the codec's flow stage")
        self.cache = cache

    def __call__(self, record: Record, rng: np.random.Generator) -> dict | Skip:
        cached = self.cache.get(record.id)
        if cached is None:
            return Skip("missing_cache_entry", f"record {record.id!r}")
        mel = _normalized_mel(self.settings, record)
        codes = cached["codes"]
        if codes.size != -(-mel.shape[0] // FRAMES_PER_CODE):
            raise ValueError(f"{self.cache.path}: entry {record.id!r}: codes: expected "
                             f"{-(-mel.shape[0] // FRAMES_PER_CODE)} codes for "
                             f"{mel.shape[0]} mel frames, got {codes.size} (a cache of "
                             f"another dataset?)")
        span = self.settings.flow.crop_frames // FRAMES_PER_CODE
        start = int(rng.integers(0, max(codes.size - span, 0) + 1))
        return {"mel": mel[FRAMES_PER_CODE * start:FRAMES_PER_CODE * (start + span)],
                "codes": codes[start:start + span], "speaker": cached["speaker"]}

    def batch(self, examples: list[dict]) -> dict[str, np.ndarray]:
        frames, rows = self.settings.flow.crop_frames, self.batch_size
        mel, mask = pad_batch([e["mel"] for e in examples], frames, rows)
        codes, code_mask = pad_batch([e["codes"] for e in examples],
                                     frames // FRAMES_PER_CODE, rows)
        speaker = np.zeros((rows, self.settings.speaker.embed_dim), np.float32)
        speaker[:len(examples)] = np.stack([e["speaker"] for e in examples])
        return {"mel": mel, "mel_mask": mask, "codes": codes, "code_mask": code_mask,
                "speaker": speaker}


class VocoderExamples(Examples):
    def __init__(self, settings: CodecSettings, batch_size: int):
        super().__init__(settings, batch_size)
        self.samples = settings.vocoder.segment_frames * settings.mel.hop_length

    def __call__(self, record: Record, rng: np.random.Generator) -> dict:
        return {"wave": _crop(record.wave, self.samples, rng)}

    def batch(self, examples: list[dict]) -> dict[str, np.ndarray]:
        wave, _ = pad_batch([e["wave"] for e in examples], self.samples, self.batch_size)
        return {"wave": wave}


# ----------------------------------------------------------------------------- iterators


def train_iterator(settings: CodecSettings, stage: str, batch_size: int, shard_index: int,
                   shard_count: int, seed: int, cache: RecordCache | None = None):
    """This host's batches of `stage` (batch_size // shard_count rows) from the train split.

    cache: the corpus's RecordCache (the flow stage's codes)."""
    if batch_size % shard_count:
        raise ValueError(f"train.batch_size: expected a multiple of the {shard_count} data "
                         f"processes, got {batch_size}")
    rows = batch_size // shard_count
    data_dir = check_data_dir(settings)
    if stage == "flow":
        if cache is None:
            raise ValueError("the flow stage reads codes from the corpus's RecordCache; "
                             "expected a cache")
        examples = FlowExamples(settings, rows, cache)
    else:
        examples = {"speaker": SpeakerExamples, "tokenizer": TokenizerExamples,
                    "vocoder": VocoderExamples}[stage](settings, rows)
    return make_example_iterator(
        examples, examples.batch, rows, data_dir=data_dir, split=settings.train_split,
        dataset_name=settings.dataset, limits=examples.limits,
        accepts=NotHeldOut(settings.heldout_speaker_ids), seed=seed, shard_index=shard_index,
        shard_count=shard_count, num_workers=settings.data_workers, name=f"codec {stage}")


def check_data_dir(settings: CodecSettings) -> str:
    """experiment.data_dir, checked where it is opened."""
    path = os.path.expanduser(settings.data_dir)
    if not settings.data_dir or not os.path.isdir(path):
        raise FileNotFoundError(f"experiment.data_dir: expected the dataset directory (--data "
                                f"DIR, made by `chorus data synth --out DIR`), got "
                                f"{settings.data_dir!r}")
    return path
