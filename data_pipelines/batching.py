"""The batch stages' shared skip protocol, and the generic batch stage (`batch_fn`).

Upstream of a batch stage every record yields exactly one element: an example dict, or a skip
marker `{SKIP_KEY: reason}` (reason in `records.SKIP_REASONS`). A batch stage counts the
markers into the batch it emits (`batch[SKIPPED_KEY]`, int64 [len(SKIP_REASONS)]) instead of
batching them, so bad input never yields a malformed batch; the iterator pops and sums them.
One element per record also keeps grain's worker interleave in record order (workers read
records i::n and are read round-robin), so the batches do not depend on the worker count.

`BatchIterDataset` groups `batch_size` examples and hands them to the mode's
`batch_fn(list[dict]) -> dict of numpy arrays`, each with leading dim `batch_size` and the
same shapes every batch (checked). The last batch of a finite pass may have fewer examples:
`batch_fn` pads it (or pass `drop_remainder=True`). `packing.PackAndBatchIterDataset` is the
token-stream stage.

Checkpointing: the state is the parent's state at the batch boundary, so a restored iterator
yields the same next batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain
import numpy as np

from data_pipelines.records import SKIP_REASONS

SKIP_KEY = "skip"  # an upstream element {"skip": reason} is a skipped example
SKIPPED_KEY = "skipped"  # int64 [len(SKIP_REASONS)] counts carried by each batch

BatchFn = Callable[[list[dict]], dict[str, np.ndarray]]


def skip_vector() -> np.ndarray:
    return np.zeros(len(SKIP_REASONS), np.int64)


def skip_counts(vector) -> dict[str, int]:
    return {reason: int(n) for reason, n in zip(SKIP_REASONS, vector, strict=True)}


def format_skips(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "skipped 0 examples"
    detail = ", ".join(f"{r}={n}" for r, n in counts.items() if n)
    return f"skipped {total} examples: {detail}"


class SkipGuard:
    """Counts skip markers; raises when `limit` records in a row were skipped (the graph sets
    2 x the shard: a whole pass yielded nothing), instead of looping forever on an unusable
    dataset. limit=None: no limit."""

    def __init__(self, limit: int | None, what: str):
        self.limit, self.what = limit, what
        self.in_a_row = 0
        self.total = skip_vector()

    def skipped(self, element: dict, counts: np.ndarray) -> bool:
        """True (and counted into `counts`) when `element` is a skip marker."""
        if SKIP_KEY not in element:
            self.in_a_row = 0
            return False
        index = SKIP_REASONS.index(element[SKIP_KEY])
        counts[index] += 1
        self.total[index] += 1
        self.in_a_row += 1
        if self.limit is not None and self.in_a_row >= self.limit:
            counts = format_skips(skip_counts(self.total))
            raise ValueError(f"{self.what}: the last {self.in_a_row} records were all skipped "
                             f"(a whole pass over the shard); {counts}")
        return True


class _BatchIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, batch_size: int, batch_fn: BatchFn,
                 drop_remainder: bool, guard_limit: int | None):
        super().__init__(parent)
        self._batch_size, self._batch_fn = batch_size, batch_fn
        self._drop_remainder = drop_remainder
        self._guard = SkipGuard(guard_limit, "make_example_iterator")
        self._spec: dict[str, tuple] | None = None
        self._exhausted = False

    def __next__(self) -> dict[str, np.ndarray]:
        if self._exhausted:
            raise StopIteration
        examples, counts = [], skip_vector()
        while len(examples) < self._batch_size:
            try:
                element = next(self._parent)
            except StopIteration:
                self._exhausted = True
                break
            if not self._guard.skipped(element, counts):
                examples.append(element)
        if not examples or (self._exhausted and self._drop_remainder):
            raise StopIteration
        batch = self._batch_fn(examples)
        self._check(batch)
        return {**batch, SKIPPED_KEY: counts}

    def _check(self, batch) -> None:
        if not isinstance(batch, dict) or SKIPPED_KEY in batch:
            raise TypeError(f"batch_fn: expected a dict of numpy arrays without the key "
                            f"{SKIPPED_KEY!r}, got {type(batch).__name__}"
                            f"{sorted(batch) if isinstance(batch, dict) else ''}")
        spec = {}
        for key, value in batch.items():
            if not isinstance(value, np.ndarray) or value.ndim == 0 or (
                    value.shape[0] != self._batch_size):
                got = (f"{value.dtype}{value.shape}" if isinstance(value, np.ndarray)
                       else type(value).__name__)
                raise ValueError(f"batch_fn: {key!r}: expected a numpy array with leading dim "
                                 f"batch_size={self._batch_size}, got {got}")
            spec[key] = (value.dtype, value.shape)
        if self._spec is None:
            self._spec = spec
        elif spec != self._spec:
            raise ValueError(f"batch_fn: expected the same keys, dtypes and shapes every batch "
                             f"(fixed shapes), got {spec} after {self._spec}")

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._exhausted = False


class BatchIterDataset(grain.IterDataset):
    """Groups `batch_size` examples (skip markers counted) into `batch_fn(examples)`."""

    def __init__(self, parent: grain.IterDataset, batch_size: int, batch_fn: BatchFn, *,
                 drop_remainder: bool = False, guard_limit: int | None = None):
        super().__init__(parent)
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self._batch_size, self._batch_fn = batch_size, batch_fn
        self._drop_remainder, self._guard_limit = drop_remainder, guard_limit

    def __iter__(self) -> _BatchIterator:
        return _BatchIterator(self._parent.__iter__(), self._batch_size, self._batch_fn,
                              self._drop_remainder, self._guard_limit)

    def __str__(self) -> str:
        return f"BatchIterDataset(batch_size={self._batch_size})"
