"""RecordCache: round trip by record id, atomic writes, pickling, clear errors."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.record_cache import ArraySpec, CacheError, RecordCache, write_record_cache

ARRAYS = {"codes": ArraySpec("int32", (None,)), "speaker": ArraySpec("float32", (4,))}


def _entries(n=5):
    rng = np.random.default_rng(0)
    return [(f"utt{i}", {"codes": rng.integers(0, 100, 3 + i).astype(np.int32),
                         "speaker": rng.standard_normal(4).astype(np.float32)})
            for i in range(n)]


def test_round_trip_by_id_and_pickling(tmp_path):
    entries = _entries()
    cache = write_record_cache(str(tmp_path), "codec-run1-step200", "train", iter(entries),
                               arrays=ARRAYS, total=len(entries), attrs={"num_codes": 100},
                               progress=False)
    assert os.path.exists(tmp_path / "caches" / "codec-run1-step200" / "train.array_record")
    assert len(cache) == 5 and cache.meta.attrs == {"num_codes": 100}
    assert cache.meta.arrays == ARRAYS
    for record_id, values in reversed(entries):  # any order: random access by id
        got = cache.get(record_id)
        for name in ARRAYS:
            np.testing.assert_array_equal(got[name], values[name])
            assert got[name].dtype == values[name].dtype
    assert cache.get("nope") is None and "utt3" in cache and "nope" not in cache
    for names in (("speaker",), ("codes",), ("speaker", "codes")):  # only these are decoded
        for record_id, values in entries:
            got = cache.get(record_id, names)
            assert set(got) == set(names)
            for name in names:
                np.testing.assert_array_equal(got[name], values[name])
    assert cache.get("nope", ("codes",)) is None
    with pytest.raises(CacheError, match=r"needs arrays \['mel'\]"):
        cache.get("utt1", ("mel",))
    clone = pickle.loads(pickle.dumps(cache))  # what a grain worker gets: reopens lazily
    assert clone._reader is None
    np.testing.assert_array_equal(clone.get("utt2")["codes"], entries[2][1]["codes"])
    reopened = RecordCache.open(str(tmp_path), "codec-run1-step200", "train")
    np.testing.assert_array_equal(reopened.get("utt4")["speaker"], entries[4][1]["speaker"])
    # int16 codes are safely widened to the declared int32
    small = write_record_cache(str(tmp_path), "k", "train",
                               [("a", {"codes": np.arange(3, dtype=np.int16)})],
                               arrays={"codes": ArraySpec("int32")}, progress=False)
    assert small.get("a")["codes"].dtype == np.int32
    raw = write_record_cache(str(tmp_path), "k", "train",  # TFDS text fields come as bytes
                             [(b"utt-1", {"codes": np.arange(3, dtype=np.int32)})],
                             arrays={"codes": ArraySpec("int32")}, progress=False)
    assert raw.ids == ["utt-1"] and raw.get("utt-1") is not None


def test_missing_cache_errors_name_the_path_and_the_way_to_make_it(tmp_path):
    with pytest.raises(CacheError, match=r"'codec-x' split 'train': missing; expected .*"
                                         r"caches/codec-x/train.meta.json.*chorus codec encode"):
        RecordCache.open(str(tmp_path), "codec-x", "train")
    with pytest.raises(CacheError, match="producer_key: expected a plain directory name"):
        RecordCache.open(str(tmp_path), "../escape", "train")
    cache = write_record_cache(str(tmp_path), "k", "train", _entries(), arrays=ARRAYS,
                               progress=False)
    with pytest.raises(CacheError, match=r"TTS needs arrays \['durations'\]"):
        cache.require(("codes", "durations"), "TTS")


@pytest.mark.parametrize("entry, match", [
    (("utt0", {"codes": np.zeros(3, np.int32)}), r"expected arrays \['codes', 'speaker'\]"),
    (("utt0", {"codes": np.zeros(3, np.float32), "speaker": np.zeros(4, np.float32)}),
     "'codes': expected dtype int32, got float32"),
    (("utt0", {"codes": np.zeros(3, np.int32), "speaker": np.zeros(5, np.float32)}),
     r"'speaker': expected shape \[4\], got \(5,\)"),
    (("", {"codes": np.zeros(3, np.int32), "speaker": np.zeros(4, np.float32)}),
     "expected unique non-empty ids"),
])
def test_bad_entries_are_refused_and_leave_no_cache(tmp_path, entry, match):
    with pytest.raises(CacheError, match=match):
        write_record_cache(str(tmp_path), "k", "train", [entry], arrays=ARRAYS, progress=False)
    with pytest.raises(CacheError, match="missing"):
        RecordCache.open(str(tmp_path), "k", "train")
    assert os.listdir(tmp_path / "caches" / "k") == []  # no temp file left behind


def test_a_failed_rewrite_never_reads_as_the_old_cache(tmp_path):
    write_record_cache(str(tmp_path), "k", "train", _entries(), arrays=ARRAYS, progress=False)

    def failing():
        yield from _entries(2)
        raise RuntimeError("the producer crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        write_record_cache(str(tmp_path), "k", "train", failing(), arrays=ARRAYS,
                           progress=False)
    with pytest.raises(CacheError, match="incomplete"):
        RecordCache.open(str(tmp_path), "k", "train")


def test_a_killed_writer_leaves_a_cache_that_does_not_read_as_complete(tmp_path):
    script = f"""
import os, numpy as np
from data_pipelines.record_cache import ArraySpec, write_record_cache
def entries():
    for i in range(1000):
        if i == 500:
            os.kill(os.getpid(), 9)  # kill -9 in the middle of the corpus
        yield f"u{{i}}", {{"codes": np.arange(i % 7 + 1, dtype=np.int32)}}
write_record_cache({str(tmp_path)!r}, "k", "train", entries(),
                   arrays={{"codes": ArraySpec("int32")}}, progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    with pytest.raises(CacheError, match="missing"):  # only a temp file exists
        RecordCache.open(str(tmp_path), "k", "train")
    # the next writer removes the dead one's temp file and completes
    cache = write_record_cache(str(tmp_path), "k", "train",
                               [("u0", {"codes": np.arange(2, dtype=np.int32)})],
                               arrays={"codes": ArraySpec("int32")}, progress=False)
    assert sorted(os.listdir(tmp_path / "caches" / "k")) == ["train.array_record",
                                                             "train.meta.json"]
    assert len(cache) == 1


def test_meta_mismatch_errors(tmp_path):
    write_record_cache(str(tmp_path), "k", "train", _entries(), arrays=ARRAYS, progress=False)
    folder = tmp_path / "caches" / "k"
    meta = json.loads((folder / "train.meta.json").read_text())
    (folder / "train.meta.json").write_text(json.dumps({**meta, "split": "test"}))
    with pytest.raises(CacheError, match="expected producer_key 'k' split 'train', got 'k' "
                                         "'test'"):
        RecordCache.open(str(tmp_path), "k", "train")
    (folder / "train.meta.json").write_text(json.dumps({**meta, "data_bytes": 7}))
    with pytest.raises(CacheError, match="expected 7 bytes"):
        RecordCache.open(str(tmp_path), "k", "train")
    (folder / "train.meta.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(CacheError, match="format: expected 1, got 99"):
        RecordCache.open(str(tmp_path), "k", "train")
    (folder / "train.meta.json").write_text("{not json")
    with pytest.raises(CacheError, match="unreadable record cache meta"):
        RecordCache.open(str(tmp_path), "k", "train")
