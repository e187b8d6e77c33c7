"""make_example_iterator: non-token examples (the codec's kind) on the shared grain graph —
fixed shapes, skips counted by reason, exact resume, worker-count invariance, clear errors."""

import json

import numpy as np
import pytest

from chorus.audio.io import from_int16, to_int16
from data_pipelines.graph import make_example_iterator
from data_pipelines.records import AudioLimits, Skip

CROP = 800  # samples: 50 ms crops keep the test small
BATCH = 3


def _tone(i: int, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return to_int16(0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t))


def _records(n=11):
    out = [{"speech": _tone(i, 0.1 + 0.01 * i), "text": f"utterance {i}", "id": f"u{i}",
            "speaker_id": i % 3} for i in range(n)]
    out[2] = {**out[2], "speech": b"not audio"}  # unreadable_audio
    out[5] = {**out[5], "text": ""}  # empty_text
    out[8] = {**out[8], "speech": _tone(8, 0.02)}  # example_fn: too short for a crop
    return out


def crop_example(record, rng):
    """A random CROP-sample crop + the speaker id (module level: picklable for workers)."""
    if len(record.wave) < CROP:
        return Skip("empty_audio", "shorter than a crop")
    start = int(rng.integers(0, len(record.wave) - CROP + 1))
    return {"wave": record.wave[start:start + CROP], "speaker": int(record.speaker),
            "id": record.id}


def stack_batch(examples):
    """Fixed shapes: rows beyond the examples are zero with valid=False."""
    wave = np.zeros((BATCH, CROP), np.float32)
    speaker = np.zeros((BATCH,), np.int32)
    valid = np.zeros((BATCH,), bool)
    index = np.full((BATCH,), -1, np.int32)
    for i, ex in enumerate(examples):
        wave[i], speaker[i], valid[i] = ex["wave"], ex["speaker"], True
        index[i] = int(ex["id"][1:])
    return {"wave": wave, "speaker": speaker, "valid": valid, "index": index}


def _iterator(records, **kwargs):
    args = dict(source=records, shard_index=0, shard_count=1, seed=5,
                limits=AudioLimits(max_seconds=1.0))
    return make_example_iterator(crop_example, stack_batch, BATCH, **(args | kwargs))


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_one_pass_fixed_shapes_and_skips_counted(capsys):
    records = _records()
    with _iterator(records, num_epochs=1, shuffle=False) as it:
        batches = list(it)
    for batch in batches:
        assert batch["wave"].shape == (BATCH, CROP) and batch["wave"].dtype == np.float32
        assert set(batch) == {"wave", "speaker", "valid", "index"}
    seen = [int(i) for b in batches for i in b["index"][b["valid"]]]
    assert seen == [i for i in range(len(records)) if i not in (2, 5, 8)]  # record order
    for b in batches:  # each crop is a piece of its record's wave
        for row in np.flatnonzero(b["valid"]):
            wave = from_int16(records[b["index"][row]]["speech"])
            assert any(np.allclose(b["wave"][row], wave[s:s + CROP], atol=1e-6)
                       for s in range(len(wave) - CROP + 1))
    assert it.skipped["unreadable_audio"] == 1 and it.skipped["empty_text"] == 1
    assert it.skipped["empty_audio"] == 1 and sum(it.skipped.values()) == 3
    assert "skipped 3 examples" in capsys.readouterr().err
    with _iterator(records, num_epochs=1, shuffle=False, drop_remainder=True) as it:
        assert all(b["valid"].all() for b in it)


def test_state_restores_the_exact_next_batch():
    records = _records()
    it = _iterator(records)
    _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 5)  # crosses epochs: 8 usable records, 3 per batch
    fresh = _iterator(records)
    fresh.set_state(state)
    _assert_same(_take(fresh, 5), expected)
    assert fresh.skipped == it.skipped


def test_batches_do_not_depend_on_the_worker_count():
    records = _records()
    in_process = _take(_iterator(records), 5)
    with _iterator(records, num_workers=2) as it:
        _assert_same(_take(it, 2), in_process[:2])
        state = json.loads(json.dumps(it.get_state()))
    with _iterator(records, num_workers=2) as fresh:
        fresh.set_state(state)
        _assert_same(_take(fresh, 3), in_process[2:])
    with pytest.raises(ValueError, match="saved with num_workers=2, this iterator has "
                                         "num_workers=0"):
        _iterator(records).set_state(state)


def test_shuffle_is_seeded_and_hosts_are_disjoint():
    records = _records()
    a, b = _take(_iterator(records, seed=1), 2), _take(_iterator(records, seed=1), 2)
    _assert_same(a, b)
    c = _take(_iterator(records, seed=2), 2)
    assert not all(np.array_equal(x["index"], y["index"]) for x, y in zip(a, c, strict=True))
    seen = []
    for index in range(2):
        with _iterator(records, shard_index=index, shard_count=2, num_epochs=1) as it:
            seen.append({int(i) for batch in it for i in batch["index"][batch["valid"]]})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {i for i in range(len(records)) if i not in (2, 5, 8)}


def test_errors_name_the_problem():
    records = _records()
    bad = [{**r, "speech": b"junk"} for r in records]
    with pytest.raises(ValueError, match="all skipped .*unreadable_audio=22"):
        next(_iterator(bad))  # a dataset with no usable record never loops forever

    def short_batch(examples):
        return {"wave": np.zeros((len(examples), CROP), np.float32)}

    with pytest.raises(ValueError, match=r"'wave': expected a numpy array with leading dim "
                                         r"batch_size=3, got float32\(1, 800\)"):
        list(make_example_iterator(crop_example, short_batch, BATCH, source=records[:5],
                                   shard_index=0, shard_count=1, num_epochs=1, shuffle=False))
    with pytest.raises(TypeError, match="example_fn: expected a dict"):
        next(make_example_iterator(lambda r, rng: [r.wave], stack_batch, BATCH,
                                   source=records, shard_index=0, shard_count=1))
    with pytest.raises(ValueError, match=r"needs fields \['persona'\]"):
        _iterator(records, required_texts=("persona",))
    with pytest.raises(ValueError, match="accepts none"):
        _iterator(records, accepts=lambda raw: False)
    with pytest.raises(ValueError, match="num_workers"):
        _iterator(records, num_workers=-1)
