"""`chorus data synth | stats | tokenizer` end to end on a tiny corpus; resumability; benchmark."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from chorus.vocab import VocabLayout
from data_pipelines import cli, shards
from data_pipelines.corpus_plan import SPLITS, CorpusConfig
from data_pipelines.pipeline import make_train_iterator
from data_pipelines.synth_corpus import synth_corpus
from data_pipelines.tokenizer import TextTokenizer
from data_pipelines.voices import get_voice
from experiments.asr.regime import AsrRegime

SYNTH_ARGS = ["--hours", "0.004", "--seed", "5", "--shard-size", "3", "--workers", "2",
              "--vocab-size", "300", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("corpus"))
    assert cli.main(["synth", "--out", out, *SYNTH_ARGS]) == 0
    return out


def _shard_records(out):
    folder = os.path.join(out, "shards")
    return {name: shards.read_shard(os.path.join(folder, name))
            for name in sorted(os.listdir(folder)) if not name.startswith(".")}


def test_dataset_is_a_readable_tfds_dataset(corpus):
    sources = tfds.data_source("chorus_speech", data_dir=corpus)
    assert set(sources) == set(SPLITS)
    total = 0.0
    for split in SPLITS:
        assert len(sources[split]) >= 3
        for i in range(len(sources[split])):
            ex = sources[split][i]
            assert ex["speech"].dtype == np.int16
            assert ex["duration"] == pytest.approx(len(ex["speech"]) / 16000, abs=1e-3)
            assert 1.5 <= ex["duration"] <= 6.0
            text = ex["text"].decode()
            assert text.isascii() and text
            assert get_voice(ex["voice"].decode()).speaker_id == ex["speaker_id"]
            assert ex["id"].decode().startswith(split + "-")
            if split == "test_compositional":
                assert ex["category"].decode() != "dialogue"
            if ex["category"].decode() == "dialogue":
                assert ex["persona"].decode().startswith("name: ") and ex["answer"]
            total += float(ex["duration"])
    assert total >= 0.004 * 3600


def test_rerun_is_a_no_op_and_missing_shards_are_remade_identically(corpus):
    before = _shard_records(corpus)
    mtimes = {n: os.path.getmtime(os.path.join(corpus, "shards", n)) for n in before}
    assert cli.main(["synth", "--out", corpus, *SYNTH_ARGS]) == 0
    assert {n: os.path.getmtime(os.path.join(corpus, "shards", n)) for n in before} == mtimes
    # Simulate an interrupted run: one shard gone, a stray temp file, no dataset yet.
    victim = sorted(before)[0]
    os.remove(os.path.join(corpus, "shards", victim))
    with open(os.path.join(corpus, "shards", ".tmp-x" + victim), "wb") as f:
        f.write(b"partial")
    import shutil
    shutil.rmtree(os.path.join(corpus, "chorus_speech"))
    assert cli.main(["synth", "--out", corpus, *SYNTH_ARGS]) == 0
    after = _shard_records(corpus)
    assert sorted(after) == sorted(before)
    assert sorted(os.listdir(os.path.join(corpus, "shards"))) == sorted(before)  # temp gone
    for a, b in zip(before[victim], after[victim], strict=True):
        np.testing.assert_array_equal(a["audio"], b["audio"])  # deterministic from the seed
        assert a["meta"] == b["meta"]
    assert len(tfds.data_source("chorus_speech", data_dir=corpus)["train"]) == sum(
        len(r) for n, r in after.items() if n.startswith("train-"))


def test_other_settings_in_the_same_dir_are_refused(corpus):
    with pytest.raises(ValueError, match=r"settings \[.seed.\]"):
        synth_corpus(corpus, CorpusConfig(seed=6, hours=0.004, shard_size=3), workers=1,
                     progress=False)


def test_tokenizer_is_trained_by_synth_and_by_command(corpus, tmp_path):
    tok = TextTokenizer.from_file(os.path.join(corpus, "tokenizer.model"))
    assert tok.vocab_size <= 300
    out = str(tmp_path / "tok.model")
    assert cli.main(["tokenizer", "--data", corpus, "--vocab-size", "200", "--out", out]) == 0
    tok2 = TextTokenizer.from_file(out)
    source = tfds.data_source("chorus_speech", data_dir=corpus)["train"]
    for i in range(len(source)):
        text = source[i]["text"].decode()
        ids = tok2.encode(text)
        assert ids.max() < 200 and tok2.decode(ids) == text


def test_stats_command(corpus, capsys):
    assert cli.main(["stats", corpus, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert set(stats) == set(SPLITS)
    assert sum(s["hours"] for s in stats.values()) >= 0.004
    assert all(1.5 <= s["seconds_min"] <= s["seconds_max"] <= 6.0 for s in stats.values())
    assert cli.main(["stats", corpus]) == 0
    assert "| train |" in capsys.readouterr().out
    assert cli.main(["stats", str(corpus) + "-nope"]) == 1


def test_train_iterator_reads_the_tfds_dataset(corpus):
    layout = VocabLayout(text_size=300, num_audio_codes=16)
    with make_train_iterator(AsrRegime(), corpus, "train", layout, batch_size=2, seq_len=128,
                             shard_index=0, shard_count=1, max_frames=640) as it:
        batch = next(it)
    assert batch["tokens"].shape == (2, 128) and batch["audio_features"].shape == (2, 4, 640, 128)
    assert batch["loss_mask"].sum() > 0 and batch["audio_mask"].any()


def test_throughput_benchmark_writes_json_and_markdown(corpus, tmp_path):
    from experiments.benchmarks.data_throughput import main

    out = tmp_path / "bench"
    assert main(["--data", corpus, "--workers", "0", "--batches", "2", "--batch-size", "2",
                 "--seq-len", "128", "--max-frames", "640", "--out", str(out)]) == 0
    result = json.loads((out / "data_throughput.json").read_text())["results"][0]
    assert result["workers"] == 0 and result["examples_per_s"] > 0
    assert result["audio_seconds_per_s"] > 0
    assert "| workers |" in (out / "data_throughput.md").read_text()


def test_delete_shards_then_rerun_is_a_no_op(tmp_path):
    out = str(tmp_path / "c")
    args = ["synth", "--out", out, "--hours", "0.002", "--shard-size", "2", "--workers", "2",
            "--vocab-size", "300", "--no-progress", "--delete-shards"]
    assert cli.main(args) == 0
    assert not os.path.exists(os.path.join(out, "shards"))
    info = os.path.join(out, "chorus_speech", "1.0.0", "dataset_info.json")
    mtime = os.path.getmtime(info)
    assert cli.main(args) == 0
    assert not os.path.exists(os.path.join(out, "shards"))  # nothing was re-synthesized
    assert os.path.getmtime(info) == mtime
    assert len(tfds.data_source("chorus_speech", data_dir=out)["train"]) >= 2
