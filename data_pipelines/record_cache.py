"""Per-record arrays computed once by a model, stored beside the dataset, read by record id.

A codec turns every utterance into code ids once (a speaker encoder: an embedding); training
batches then read them instead of running the model, so no JAX runs in grain workers.

    <data_dir>/caches/<producer_key>/<split>.array_record   one entry per record
    <data_dir>/caches/<producer_key>/<split>.meta.json      written last: "this split is done"

`producer_key` is the identity of what produced the arrays (e.g. the codec run and its
checkpoint step), a plain directory name. The meta names it, the split, each array's dtype
and shape (`None` = any length, e.g. codes int32 [None]; speaker float32 [256]), the entry
count, the record ids in entry order, the data file's size and free-form `attrs` of the
producer (e.g. {"num_codes": 1000, "frames_per_second": 25}).

Writing is atomic: the old meta goes first, the data file is written to a temp name and
renamed, the new meta is written last (both through `chorus.atomic`). A killed writer leaves
a split without meta, which never reads as complete: opening it raises `CacheError`.

    write_record_cache(data_dir, key, "train", entries, total=n,
                       arrays={"codes": ArraySpec("int32", (None,))}, attrs={"num_codes": 1000})
    cache = RecordCache.open(data_dir, key, "train")
    cache.get("utt-17")        # {"codes": int32[n]} or None when the record has no entry
    cache.get("utt-17", ("codes",))   # only these arrays (the others are not decoded)

`RecordCache` needs no JAX and is picklable: grain workers get a copy that reopens the
array_record file lazily.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from chorus.atomic import atomic_path, write_json

FORMAT_VERSION = 1
CACHES_DIRNAME = "caches"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
DEFAULT_HINT = ("write it with data_pipelines.record_cache.write_record_cache (the codec's "
                "corpus encoding does, `chorus codec encode`; see docs/codec.md)")


class CacheError(ValueError):
    """A record cache is missing, incomplete or does not match; names the path and why."""


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """dtype and shape of one per-record array; None in `shape` = any length."""

    dtype: str
    shape: tuple[int | None, ...] = (None,)

    def __post_init__(self):
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        object.__setattr__(self, "shape", tuple(self.shape))
        if any(d is not None and (not isinstance(d, int) or d < 0) for d in self.shape):
            raise ValueError(f"ArraySpec.shape: expected ints >= 0 or None, got {self.shape}")

    def check(self, name: str, value, record_id: str) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype != np.dtype(self.dtype) and not np.can_cast(array.dtype, self.dtype,
                                                                    "safe"):
            raise CacheError(f"record cache entry {record_id!r}: {name!r}: expected dtype "
                             f"{self.dtype}, got {array.dtype}")
        if array.ndim != len(self.shape) or any(
                d is not None and d != n for d, n in zip(self.shape, array.shape, strict=True)):
            raise CacheError(f"record cache entry {record_id!r}: {name!r}: expected shape "
                             f"{_shape_str(self.shape)}, got {array.shape}")
        return array.astype(self.dtype, copy=False)


def _shape_str(shape) -> str:
    return "[" + ", ".join("n" if d is None else str(d) for d in shape) + "]"


@dataclasses.dataclass(frozen=True)
class CacheMeta:
    producer_key: str
    split: str
    arrays: Mapping[str, ArraySpec]
    count: int
    attrs: Mapping[str, Any]
    data_bytes: int

    def to_json(self, ids: list[str]) -> dict:
        return {"format": FORMAT_VERSION, "producer_key": self.producer_key,
                "split": self.split, "count": self.count, "data_bytes": self.data_bytes,
                "arrays": {k: {"dtype": s.dtype, "shape": list(s.shape)}
                           for k, s in self.arrays.items()},
                "attrs": dict(self.attrs), "ids": ids}


def cache_dir(data_dir: str, producer_key: str) -> str:
    if not isinstance(producer_key, str) or not _KEY.match(producer_key):
        raise CacheError(f"producer_key: expected a plain directory name (letters, digits, "
                         f"'._+=-'), got {producer_key!r}")
    return os.path.join(os.path.expanduser(data_dir), CACHES_DIRNAME, producer_key)


def _paths(data_dir: str, producer_key: str, split: str) -> tuple[str, str]:
    folder = cache_dir(data_dir, producer_key)
    return (os.path.join(folder, f"{split}.array_record"),
            os.path.join(folder, f"{split}.meta.json"))


def _encode(arrays: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    for array in arrays:
        np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}


def _decode(blob: bytes, names: tuple[str, ...], wanted: Iterable[str]) -> dict[str, np.ndarray]:
    """The `wanted` arrays of an entry holding `names` in order; the others' data is skipped
    (only their .npy headers are read)."""
    wanted = set(wanted)
    buf, out = io.BytesIO(blob), {}
    for name in names:
        if len(out) == len(wanted):
            break
        if name in wanted:
            out[name] = np.lib.format.read_array(buf, allow_pickle=False)
            continue
        start = buf.tell()
        version = np.lib.format.read_magic(buf)
        if version not in _HEADERS:  # (3, 0): utf-8 field names, never ours; read it through
            buf.seek(start)
            np.lib.format.read_array(buf, allow_pickle=False)
            continue
        shape, _, dtype = _HEADERS[version](buf)
        buf.seek(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, io.SEEK_CUR)
    return out


def write_record_cache(data_dir: str, producer_key: str, split: str,
                       entries: Iterable[tuple[str, Mapping[str, Any]]], *,
                       arrays: Mapping[str, ArraySpec], total: int | None = None,
                       attrs: Mapping[str, Any] | None = None,
                       progress: bool = True) -> RecordCache:
    """Writes `<data_dir>/caches/<producer_key>/<split>.*` atomically and returns it opened.

    entries: (record_id, {name: array}) pairs, each with exactly the names of `arrays`
    (record_id as the dataset stores it, str or UTF-8 bytes: the `FieldMap.id` field)
    (dtype safely castable, shape as specified); ids unique and non-empty. total: the number
    of entries, for the progress line. attrs: JSON-able facts of the producer.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    from chorus.progress import progress as progress_bar

    specs = {name: s if isinstance(s, ArraySpec) else ArraySpec(**s)
             for name, s in arrays.items()}
    if not specs:
        raise CacheError("write_record_cache: arrays: expected at least one {name: ArraySpec}")
    attrs = dict(attrs or {})
    json.dumps(attrs)  # fails now, not after the whole corpus was encoded
    data_path, meta_path = _paths(data_dir, producer_key, split)
    os.makedirs(os.path.dirname(data_path), exist_ok=True)
    for stale in glob.glob(os.path.join(os.path.dirname(data_path),
                                        f".tmp-*{os.path.basename(data_path)}")):
        os.remove(stale)  # a killed writer's temp file
    if os.path.exists(meta_path):
        os.remove(meta_path)  # from here until the new meta lands, the split is incomplete
    ids: list[str] = []
    seen: set[str] = set()
    names = tuple(specs)
    with atomic_path(data_path) as tmp, progress_bar(
            total, f"record cache {producer_key}/{split}", "record",
            enabled=progress) as bar:
        writer = ArrayRecordWriter(tmp, "group_size:1")
        try:
            for record_id, values in entries:
                # the id as `Record.id` reads it (TFDS text fields come as bytes)
                record_id = (bytes(record_id).decode("utf-8") if isinstance(
                    record_id, bytes | np.bytes_) else str(record_id))
                if not record_id or record_id in seen:
                    raise CacheError(f"{data_path}: record id: expected unique non-empty ids, "
                                     f"got {record_id!r} {'again' if record_id else ''}")
                if set(values) != set(names):
                    raise CacheError(f"{data_path}: entry {record_id!r}: expected arrays "
                                     f"{sorted(names)}, got {sorted(values)}")
                writer.write(_encode([specs[n].check(n, values[n], record_id)
                                      for n in names]))
                seen.add(record_id)
                ids.append(record_id)
                bar.update(1)
        finally:
            writer.close()
    meta = CacheMeta(producer_key, split, specs, len(ids), attrs, os.path.getsize(data_path))
    write_json(meta_path, meta.to_json(ids))
    return RecordCache.open(data_dir, producer_key, split)


class RecordCache:
    """A complete cache split, read by record id (`get`); picklable, reopened lazily."""

    def __init__(self, data_path: str, meta: CacheMeta, ids: list[str]):
        self.path, self.meta = data_path, meta
        self.ids = ids
        self._index = {record_id: i for i, record_id in enumerate(ids)}
        self._names = tuple(meta.arrays)
        self._reader = None

    @classmethod
    def open(cls, data_dir: str, producer_key: str, split: str, *,
             hint: str = DEFAULT_HINT) -> RecordCache:
        """The split's cache; CacheError naming the path (and `hint`: how to make it) when it
        is missing, incomplete (no meta: a writer did not finish) or inconsistent."""
        data_path, meta_path = _paths(data_dir, producer_key, split)
        if not os.path.exists(meta_path):
            state = ("incomplete (its writer did not finish)" if os.path.exists(data_path)
                     else "missing")
            raise CacheError(f"record cache {producer_key!r} split {split!r}: {state}; "
                             f"expected {meta_path} beside {data_path}; {hint}")
        try:
            with open(meta_path) as f:
                raw = json.load(f)
            arrays = {k: ArraySpec(v["dtype"], tuple(v["shape"]))
                      for k, v in raw["arrays"].items()}
            meta = CacheMeta(raw["producer_key"], raw["split"], arrays, int(raw["count"]),
                             raw.get("attrs", {}), int(raw["data_bytes"]))
            ids = [str(i) for i in raw["ids"]]
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise CacheError(f"{meta_path}: unreadable record cache meta ({e}); {hint}") from e
        if raw.get("format") != FORMAT_VERSION:
            raise CacheError(f"{meta_path}: format: expected {FORMAT_VERSION}, got "
                             f"{raw.get('format')!r}; {hint}")
        if (meta.producer_key, meta.split) != (producer_key, split):
            raise CacheError(f"{meta_path}: expected producer_key {producer_key!r} split "
                             f"{split!r}, got {meta.producer_key!r} {meta.split!r}")
        size = os.path.getsize(data_path) if os.path.exists(data_path) else None
        if size != meta.data_bytes or len(ids) != meta.count:
            raise CacheError(f"{data_path}: expected {meta.data_bytes} bytes and {meta.count} "
                             f"ids as its meta says, got {size} bytes and {len(ids)} ids; "
                             f"{hint}")
        return cls(data_path, meta, ids)

    def __len__(self) -> int:
        return self.meta.count

    def __contains__(self, record_id: str) -> bool:
        return record_id in self._index

    def get(self, record_id: str, names: Iterable[str] | None = None,
            ) -> dict[str, np.ndarray] | None:
        """{name: array} of the record (only `names`, default: every array), or None when the
        cache has no entry for it."""
        if names is not None:
            self.require(names, "RecordCache.get")
        index = self._index.get(record_id)
        if index is None:
            return None
        if self._reader is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            self._reader = ArrayRecordDataSource([self.path])
        return _decode(self._reader[index], self._names,
                       self._names if names is None else names)

    def require(self, names: Iterable[str], what: str) -> None:
        """CacheError unless the cache holds every array in `names` (for `what`)."""
        missing = sorted(set(names) - set(self._names))
        if missing:
            raise CacheError(f"{self.path}: {what} needs arrays {missing}, the cache has "
                             f"{sorted(self._names)}")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_reader"} | {"_reader": None}

    def __repr__(self) -> str:
        return (f"RecordCache({self.meta.producer_key!r}, split={self.meta.split!r}, "
                f"{self.meta.count} entries, arrays={sorted(self._names)})")
