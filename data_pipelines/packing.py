"""Pack variable-length examples into fixed-shape batches (a grain IterDataset stage).

First fit within one batch: each example goes to the first of the B rows with room for its
tokens (<= L) and its audio clips (<= A); when none has room the batch is emitted and the
example opens the next one. Skip markers from upstream are counted into the batch's `skipped`
vector instead of being packed (the protocol of `batching`), so bad input never yields a
malformed batch.

Checkpointing: the state is the parent's state from which re-reading reproduces the next batch
exactly (before the carried-over example, if any), so restore -> the same next batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from data_pipelines.batching import SKIPPED_KEY, SkipGuard, skip_vector


@dataclasses.dataclass(frozen=True)
class BatchShape:
    batch_size: int  # B
    seq_len: int  # L
    max_clips: int  # A (clips per row)
    max_frames: int  # T (mel frames per clip, a multiple of 8)
    num_mels: int = 128
    pad_id: int = 0

    def __post_init__(self):
        for name in ("batch_size", "seq_len", "max_clips", "max_frames", "num_mels"):
            if getattr(self, name) < 1:
                raise ValueError(f"BatchShape.{name}: expected >= 1, got {getattr(self, name)}")
        if self.max_frames % 8:
            raise ValueError(f"BatchShape.max_frames: expected a multiple of 8 (encoder /4 x "
                             f"adaptor /2), got {self.max_frames}")


def empty_batch(shape: BatchShape) -> dict[str, np.ndarray]:
    b, length, a, t = shape.batch_size, shape.seq_len, shape.max_clips, shape.max_frames
    return {
        "tokens": np.full((b, length), shape.pad_id, np.int32),
        "targets": np.full((b, length), shape.pad_id, np.int32),
        "loss_mask": np.zeros((b, length), np.float32),
        "segment_ids": np.zeros((b, length), np.int32),
        "positions": np.zeros((b, length), np.int32),
        "audio_features": np.zeros((b, a, t, shape.num_mels), np.float32),
        "audio_mask": np.zeros((b, a, t), bool),
        SKIPPED_KEY: skip_vector(),
    }


class _RowPacker:
    """Fills one batch: per-row token and clip cursors."""

    def __init__(self, shape: BatchShape):
        self.shape = shape
        self.batch = empty_batch(shape)
        self.used_tokens = [0] * shape.batch_size
        self.used_clips = [0] * shape.batch_size
        self.num_segments = [0] * shape.batch_size
        self.num_examples = 0

    def fits_empty_row(self, example: dict) -> bool:
        return (len(example["tokens"]) <= self.shape.seq_len
                and len(example["audio_features"]) <= self.shape.max_clips)

    def add(self, example: dict) -> bool:
        n, c = len(example["tokens"]), len(example["audio_features"])
        for row in range(self.shape.batch_size):
            if (self.used_tokens[row] + n <= self.shape.seq_len
                    and self.used_clips[row] + c <= self.shape.max_clips):
                self._place(row, example, n, c)
                return True
        return False

    def _place(self, row: int, example: dict, n: int, c: int) -> None:
        start, clip = self.used_tokens[row], self.used_clips[row]
        self.num_segments[row] += 1
        span = slice(start, start + n)
        for key in ("tokens", "targets", "loss_mask"):
            self.batch[key][row, span] = example[key]
        self.batch["segment_ids"][row, span] = self.num_segments[row]
        self.batch["positions"][row, span] = np.arange(n, dtype=np.int32)
        if c:
            frames = example["audio_features"].shape[1]
            self.batch["audio_features"][row, clip:clip + c, :frames] = example["audio_features"]
            self.batch["audio_mask"][row, clip:clip + c, :frames] = example["audio_mask"]
        self.used_tokens[row] += n
        self.used_clips[row] += c
        self.num_examples += 1


class _PackIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, shape: BatchShape, guard_limit: int | None):
        super().__init__(parent)
        self._shape = shape
        self._guard = SkipGuard(guard_limit, "packing")
        self._carry: dict | None = None
        self._carry_state: dict | None = None
        self._exhausted = False

    def __next__(self) -> dict[str, np.ndarray]:
        if self._exhausted:
            raise StopIteration
        packer = _RowPacker(self._shape)
        if self._carry is not None:
            packer.add(self._carry)
            self._carry = self._carry_state = None
        while True:
            state_before = self._parent.get_state()
            try:
                element = next(self._parent)
            except StopIteration:
                self._exhausted = True
                if packer.num_examples == 0:
                    raise
                return packer.batch
            if self._guard.skipped(element, packer.batch[SKIPPED_KEY]):
                continue
            if not packer.fits_empty_row(element):
                raise ValueError(f"packing: example with {len(element['tokens'])} tokens / "
                                 f"{len(element['audio_features'])} clips can never fit a row of "
                                 f"{self._shape.seq_len} tokens / {self._shape.max_clips} clips")
            if not packer.add(element):
                self._carry, self._carry_state = element, state_before
                return packer.batch

    def get_state(self) -> dict[str, Any]:
        parent = self._carry_state if self._carry is not None else self._parent.get_state()
        return {"parent": parent}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._carry = self._carry_state = None
        self._exhausted = False


class PackAndBatchIterDataset(grain.IterDataset):
    """guard_limit: records skipped in a row before the stage gives up (`batching.SkipGuard`;
    None = no limit)."""

    def __init__(self, parent: grain.IterDataset, shape: BatchShape,
                 guard_limit: int | None = None):
        super().__init__(parent)
        self._shape, self._guard_limit = shape, guard_limit

    def __iter__(self) -> _PackIterator:
        return _PackIterator(self._parent.__iter__(), self._shape, self._guard_limit)

    def __str__(self) -> str:
        return f"PackAndBatchIterDataset({self._shape})"
