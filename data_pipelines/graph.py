"""The one grain graph behind every data iterator, and `make_example_iterator`.

    records (a TFDS split, or any random-access sequence of record dicts)
      -> host shard [i::n] -> shuffle(seed) -> repeat(num_epochs)
      -> random_map(RecordExamples: raw dict -> read_record -> example_fn -> example | skip)
      -> to_iter_dataset -> mp_prefetch(num_workers)          (per-record work in the workers)
      -> batch stage, in this process                          (batch_fn, or token packing)
      -> DataIterator: get_state()/set_state() JSON-able, skip counts by reason

Every record yields one element (an example or a skip marker, `batching`), and the batch stage
runs after the worker interleave, so the batches are the same for any `num_workers` (the
per-example rng is grain's, seeded from `seed` and the element's index, so it too is
independent of the workers). A saved state names its worker count and restores under the
same count (grain's state layout differs with workers).

`make_example_iterator` is the graph for examples that are not token streams (the codec's
waveform crops, mel + labels, speaker ids); `pipeline.make_train_iterator` is the same graph
with a regime's token streams and the packing stage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np

from data_pipelines.batching import (
    SKIP_KEY,
    SKIPPED_KEY,
    BatchFn,
    BatchIterDataset,
    format_skips,
    skip_counts,
    skip_vector,
)
from data_pipelines.records import (
    DEFAULT_LIMITS,
    SKIP_REASONS,
    AudioLimits,
    Record,
    Skip,
    read_record,
)
from data_pipelines.sources import DEFAULT_FIELDS, FieldMap, field_names, open_source

ExampleFn = Callable[[Record, "np.random.Generator | None"], "dict | Skip"]
Accepts = Callable[[dict], bool]


# ----------------------------------------------------------------------------- records


class Subset(Sequence):
    """The records of `source` at `indices`, in that order (picklable for grain workers)."""

    def __init__(self, source: Sequence[dict], indices: list[int]):
        self.source, self.indices = source, list(indices)
        self.field_names = field_names(source)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.source[self.indices[index]]


def open_records(data_dir: str | None, split: str, dataset_name: str,
                 source: Sequence[dict] | None, fields: FieldMap,
                 required_texts: tuple[str, ...] = (), accepts: Accepts | None = None,
                 what: str = "iterator") -> Sequence[dict]:
    """The split's records (or `source`), checked to have the fields the examples need.

    required_texts: FieldMap attributes (e.g. "persona") whose fields must exist.
    accepts(raw) -> bool: keeps only the records it accepts (one pass over the split).
    """
    if source is None:
        if data_dir is None:
            raise ValueError("data_dir: expected the TFDS data_dir (or pass source=...), got None")
        source = open_source(dataset_name, data_dir, split)
    where = f"dataset {dataset_name!r} split {split!r}"
    if len(source) == 0:
        raise ValueError(f"{where}: expected records, got 0")
    names = set(field_names(source))
    required = [fields.audio, fields.text]
    for name in required_texts:
        field = getattr(fields, name, None)
        if field is None:
            raise ValueError(f"{what}: needs the text {name!r}, but FieldMap.{name} is None")
        required.append(field)
    missing = [f for f in required if f not in names]
    if missing:
        raise ValueError(f"{where}: {what} needs fields {missing} (FieldMap), dataset has "
                         f"{sorted(names)}")
    if accepts is not None:
        source = Subset(source, [i for i in range(len(source)) if accepts(source[i])])
        if len(source) == 0:
            raise ValueError(f"{where}: {what} accepts none of the records")
    return source


class RecordExamples:
    """raw record -> `read_record` -> `example_fn(record, rng)` -> example dict, or Skip.

    Picklable when `example_fn` is (a module-level function or an instance's method): grain
    workers get a copy. Called by grain (`random_map`) it returns a skip marker for a Skip.
    """

    def __init__(self, example_fn: ExampleFn, fields: FieldMap = DEFAULT_FIELDS,
                 limits: AudioLimits = DEFAULT_LIMITS, required_texts: tuple[str, ...] = ()):
        self.example_fn, self.fields, self.limits = example_fn, fields, limits
        self.required_texts = tuple(required_texts)

    def example(self, raw: dict, rng: np.random.Generator | None) -> dict | Skip:
        record = read_record(raw, self.fields, self.limits, self.required_texts)
        if isinstance(record, Skip):
            return record
        example = self.example_fn(record, rng)
        if isinstance(example, Skip):
            return example
        if not isinstance(example, dict) or SKIP_KEY in example:
            raise TypeError(f"example_fn: expected a dict (without the key {SKIP_KEY!r}) or a "
                            f"Skip, got {type(example).__name__} for record {record.id!r}")
        return example

    def __call__(self, raw: dict, rng: np.random.Generator) -> dict:
        example = self.example(raw, rng)
        return {SKIP_KEY: example.reason} if isinstance(example, Skip) else example


# ----------------------------------------------------------------------------- the graph


def host_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    """(shard_index, shard_count); defaults: jax.process_index() / jax.process_count()."""
    if shard_index is None or shard_count is None:
        import jax  # only for the defaults: the host's place among the processes

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index: expected 0 <= shard_index < shard_count={shard_count}, "
                         f"got {shard_index}")
    return shard_index, shard_count


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; programs without absl.app never parse them."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


WORKER_SHM_MIN_BYTES = 1 << 20  # worker outputs below this size travel pickled
BatchStage = Callable[[grain.IterDataset, int], grain.IterDataset]  # (examples, guard) -> batches


def batched_dataset(source: Sequence[dict], record_fn: RecordExamples, batch_stage: BatchStage,
                    *, seed: int, shard: tuple[int, int], num_workers: int,
                    num_epochs: int | None, shuffle: bool, buffer: int) -> grain.IterDataset:
    """The graph of the module docstring; `buffer`: examples read ahead per process."""
    if num_workers < 0:
        raise ValueError(f"num_workers: expected >= 0, got {num_workers}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs: expected None (forever) or >= 1, got {num_epochs}")
    shard_index, shard_count = shard
    ds = grain.MapDataset.source(source)[shard_index::shard_count]
    if len(ds) == 0:
        raise ValueError(f"shard {shard_index}/{shard_count}: expected records, got none of "
                         f"the {len(source)} (more hosts than records)")
    # 2 x the shard: any 2n consecutive elements hold one whole epoch, so a guard error means
    # that a whole pass over the shard was skipped (not an unlucky run across epochs).
    guard_limit = 2 * len(ds)
    if shuffle:
        ds = ds.shuffle(seed)
    ds = ds.repeat(num_epochs).random_map(record_fn, seed=seed)
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=buffer))
    if num_workers:
        _ensure_absl_flags_parsed()
        # Per-record elements are small (a clip is <= 400 KiB): pickled through the queue, not
        # one shared-memory segment per array (whose buffered ones outlive close() and warn).
        iter_ds = grain.experimental.WithOptionsIterDataset(
            iter_ds, grain.experimental.DatasetOptions(min_shm_size=WORKER_SHM_MIN_BYTES))
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=num_workers, per_worker_buffer_size=max(2, buffer // num_workers)))
    return batch_stage(iter_ds, guard_limit)


# ----------------------------------------------------------------------------- iterators


class DataIterator(Iterator[dict]):
    """Fixed-shape batches; get_state()/set_state() JSON-able; counts skips by reason."""

    def __init__(self, dataset: grain.IterDataset, description: str, num_workers: int = 0):
        self._iter = iter(dataset)
        self._skipped = skip_vector()
        self.description, self.num_workers = description, num_workers

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
        return skip_counts(self._skipped)

    def get_state(self) -> dict[str, Any]:
        state = {"grain": self._iter.get_state(), "skipped": self.skipped,
                 "num_workers": self.num_workers}
        return json.loads(json.dumps(state, default=_to_json))

    def set_state(self, state: dict[str, Any]) -> None:
        saved = state.get("num_workers", self.num_workers)
        if saved != self.num_workers:
            raise ValueError(f"{self.description}: the state was saved with num_workers={saved},"
                             f" this iterator has num_workers={self.num_workers}; restore with "
                             f"{saved} (the batches are the same for any count)")
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
    """One ordered pass over `indices` of `source`, unpacked: `example(raw) -> dict | Skip`
    per record; bad records counted by reason."""

    def __init__(self, source: Sequence[dict], example: Callable[[dict], dict | Skip],
                 indices: range, description: str):
        self._source, self._example, self._indices = source, example, indices
        self._next = 0
        self._skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.description = description

    def __next__(self) -> dict:
        while self._next < len(self._indices):
            index = self._indices[self._next]
            self._next += 1
            example = self._example(self._source[index])
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


def describe(name: str, dataset_name: str, split: str, shard: tuple[int, int]) -> str:
    return f"{name} {dataset_name}/{split} shard {shard[0]}/{shard[1]}"


# ----------------------------------------------------------------------------- non-token examples


def make_example_iterator(example_fn: ExampleFn, batch_fn: BatchFn, batch_size: int,
                          data_dir: str | None = None, split: str = "train", *,
                          dataset_name: str = "chorus_speech",
                          source: Sequence[dict] | None = None,
                          fields: FieldMap = DEFAULT_FIELDS,
                          limits: AudioLimits = DEFAULT_LIMITS,
                          required_texts: tuple[str, ...] = (), accepts: Accepts | None = None,
                          seed: int = 0, shard_index: int | None = None,
                          shard_count: int | None = None, num_workers: int = 0,
                          num_epochs: int | None = None, shuffle: bool = True,
                          drop_remainder: bool = False, name: str = "examples") -> DataIterator:
    """Fixed-shape batches of a mode's own examples (not token streams).

    example_fn(record: Record, rng: np.random.Generator) -> dict | Skip: one validated record
      (16 kHz float32 wave + texts, `records.Record`) -> one example; a Skip is counted by its
      reason. Picklable when num_workers > 0 (grain workers get a copy).
    batch_fn(examples: list[dict]) -> {name: numpy array [batch_size, ...]}: the same keys,
      dtypes and shapes every batch (checked). It gets `batch_size` examples, fewer only for
      the last batch of a finite pass (pad it; or drop_remainder=True). Runs in this process.
    data_dir/split/dataset_name: a prepared TFDS dataset; or `source`, any random-access
      sequence of record dicts. fields/limits/required_texts: how records are read and
      validated (`records.read_record`); accepts(raw) -> bool filters records.
    Sharding, shuffling, epochs, workers and state: as `pipeline.make_train_iterator`.
    """
    shard = host_shard(shard_index, shard_count)
    source = open_records(data_dir, split, dataset_name, source, fields, required_texts,
                          accepts, what=name)
    record_fn = RecordExamples(example_fn, fields, limits, required_texts)

    def stage(examples: grain.IterDataset, guard_limit: int) -> grain.IterDataset:
        return BatchIterDataset(examples, batch_size, batch_fn, drop_remainder=drop_remainder,
                                guard_limit=guard_limit)

    ds = batched_dataset(source, record_fn, stage, seed=seed, shard=shard,
                         num_workers=num_workers, num_epochs=num_epochs, shuffle=shuffle,
                         buffer=2 * batch_size)
    return DataIterator(ds, describe(name, dataset_name, split, shard), num_workers)
