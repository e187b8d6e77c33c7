"""The codec end to end on the shared stack: `chorus codec train` (= `chorus train
--experiment codec`) trains the four stages on a chorus_speech dataset without its synthesis
shards, resumes after SIGKILL in the middle of the flow stage, writes the corpus's
RecordCache that the flow stage reads; then encode -> decode --stream -> eval, and errors."""

import json
import os
import shutil
import signal
import sys

import numpy as np
import pytest
import soundfile as sf
from codec_fixtures import TINY_OVERRIDES
from test_training_runs import _launch, _steps, _tail, _wait_for_step

from chorus.codec.compile import fast_compile
from chorus.codec.pipeline import Codec
from chorus.training.cli import train_main
from chorus.training.metrics import read_jsonl
from data_pipelines.record_cache import RecordCache
from data_pipelines.records import read_record
from data_pipelines.sources import DEFAULT_FIELDS, open_source
from experiments.codec import corpus_cache
from experiments.codec.cli import main
from experiments.codec.corpus_codes import ENCODE_LIMITS, ENCODERS, encodable_records, producer_key
from experiments.codec.data import FlowExamples
from experiments.codec.evaluation import run_settings

FLOW_STEPS = 40
SCHEDULE = [f"experiment.train.{stage}.{key}={value}"
            for stage, steps in (("speaker", 2), ("tokenizer", 2), ("flow", FLOW_STEPS),
                                 ("vocoder", 2))
            for key, value in (("steps", steps), ("batch_size", 4), ("warmup_steps", 1))]
SETS = [*TINY_OVERRIDES, *SCHEDULE, "train.checkpoint_every=2", "train.keep_checkpoints=50",
        "train.log_every=1"]


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    # These tests are compile-bound: XLA optimization level 0 halves their CPU time.
    with fast_compile():
        yield


@pytest.fixture(scope="module")
def data_dir(tiny_asr_corpus, tmp_path_factory):
    """The tiny corpus without `chorus data synth`'s shards (as after --delete-shards)."""
    out = str(tmp_path_factory.mktemp("codec_data"))
    shutil.copytree(os.path.join(tiny_asr_corpus, "chorus_speech"),
                    os.path.join(out, "chorus_speech"))
    return out


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A codec run whose flow stage was SIGKILLed mid-stage and then resumed."""
    tmp = tmp_path_factory.mktemp("codec_run")
    workdir = str(tmp / "run")
    cmd = [sys.executable, "-m", "chorus.cli", "codec", "train", "--workdir", workdir,
           "--data", data_dir, "--quiet", *[a for s in SETS for a in ("--set", s)]]
    env = dict(os.environ, JAX_PLATFORMS="cpu", CHORUS_CODEC_FAST_COMPILE="1",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    logs = [str(tmp / f"attempt{i}.log") for i in range(2)]
    proc = _launch(cmd, env, logs[0])
    flow_dir = os.path.join(workdir, "flow")
    _wait_for_step(proc, flow_dir, 5, logs[0], timeout=600)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = max(r["step"] for r in _steps(flow_dir))
    proc = _launch(cmd, env, logs[1])
    assert proc.wait(timeout=900) == 0, _tail(logs[1])
    return workdir, killed_at, _tail(logs[1])


def test_train_resumes_the_killed_stage_exactly(trained, capsys):
    workdir, killed_at, log = trained
    assert killed_at < FLOW_STEPS, "the flow stage finished before SIGKILL arrived"
    assert "stage speaker: skipped" in log and "stage tokenizer: skipped" in log
    assert "stage flow: completed at step 40" in log
    assert "stage vocoder: completed at step 2" in log
    flow_dir = os.path.join(workdir, "flow")
    (resumed,) = [e["step"] for e in read_jsonl(os.path.join(flow_dir, "metrics.jsonl"))
                  if e.get("event") == "resume"]
    assert 2 <= resumed <= killed_at  # the newest finalized (async) checkpoint
    # Steps trained by both attempts saw the same batch and loss, bit for bit.
    seen = {}
    for r in _steps(flow_dir):
        seen.setdefault(r["step"], set()).add((r["loss"], r["fingerprint"]))
    assert sorted(seen) == list(range(1, FLOW_STEPS + 1))
    assert all(len(v) == 1 for v in seen.values()), seen
    for stage in ("speaker", "tokenizer", "flow", "vocoder"):
        assert os.path.isfile(os.path.join(workdir, stage, "config.json"))
    with open(os.path.join(workdir, "stages.json")) as f:
        assert [s["name"] for s in json.load(f)["stages"]] == ["speaker", "tokenizer", "flow",
                                                               "vocoder"]
    voices = json.load(open(os.path.join(workdir, "voices.json")))
    assert voices and all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in voices.values())
    # A finished run is skipped as a whole; a changed network config is refused.
    sets = [a for s in SETS for a in ("--set", s)]
    data = run_settings(workdir).data_dir
    args = ["--experiment", "codec", "--workdir", workdir, "--data", data, "--quiet", *sets]
    assert train_main(args) == 0
    assert "stage vocoder: skipped" in capsys.readouterr().out
    assert train_main([*args, "--set", "experiment.flow.dim=48"]) == 2
    assert "experiment.flow.dim: saved 32, now 48" in capsys.readouterr().err


def test_flow_stage_reads_the_record_cache_it_wrote(trained, data_dir):
    workdir, *_ = trained
    encoders = Codec.load(workdir, networks=ENCODERS)
    key = producer_key(encoders)
    assert os.listdir(os.path.join(data_dir, "caches")) == [key]
    with open(os.path.join(workdir, "corpus_codes.json")) as f:  # where TTS finds the key
        assert json.load(f) == {"producer_key": key, "data_dir": data_dir, "splits": ["train"]}
    cache = RecordCache.open(data_dir, key, "train")
    source = open_source("chorus_speech", data_dir, "train")
    assert len(cache) == len(source) and cache.meta.attrs["num_codes"] == 1000
    settings = run_settings(workdir)
    examples = FlowExamples(settings, 4, cache)
    crop = settings.flow.crop_frames // 4
    for index in range(3):
        record = read_record(source[index], DEFAULT_FIELDS, ENCODE_LIMITS)
        entry = cache.get(record.id)
        codes, speaker = encoders.analyze(record.wave)  # what the cache holds: the encoders'
        np.testing.assert_array_equal(entry["codes"], codes)
        np.testing.assert_allclose(entry["speaker"], speaker, atol=1e-6)
        ex = examples(record, np.random.default_rng(index))  # what the flow stage trains on
        n = ex["codes"].size
        starts = [s for s in range(max(codes.size - crop, 0) + 1)
                  if np.array_equal(codes[s:s + n], ex["codes"])]
        assert starts and ex["mel"].shape == (4 * n, 128)
        np.testing.assert_array_equal(ex["speaker"], entry["speaker"])
    # The same checkpoint from another directory finds the same cache.
    other = os.path.join(os.path.dirname(workdir), "copy")
    shutil.copytree(workdir, other)
    assert producer_key(Codec.load(other, networks=ENCODERS)) == key


def test_tts_batches_read_the_codes_the_codec_wrote(trained, data_dir, tiny_asr_corpus):
    """The codec's corpus encoding is what TTS trains on: codes of the record, at the layout's
    audio offset, between <tts_start> and <tts_end> (no model runs in the data pipeline)."""
    from chorus.config import load_config
    from chorus.vocab import VocabLayout
    from experiments import tts

    workdir, *_ = trained
    shutil.copy(os.path.join(tiny_asr_corpus, "tokenizer.model"), data_dir)
    with open(os.path.join(workdir, "corpus_codes.json")) as f:
        key = json.load(f)["producer_key"]
    config = load_config("cpu-tiny", [f"experiment.data_dir={data_dir}",
                                      f"experiment.cache_key={key}", "train.batch_size=2"])
    batch = next(tts.build(config).train_iterator(0, 1, 0))
    layout = VocabLayout.from_model_config(config.model)
    cache = RecordCache.open(data_dir, key, "train")
    all_codes = {tuple(cache.get(i)["codes"].tolist()) for i in cache.ids}
    start, end = layout.special("<tts_start>"), layout.special("<tts_end>")
    for row, segments in zip(batch["tokens"], batch["segment_ids"], strict=True):
        for seg in set(segments.tolist()) - {0}:
            ids = row[segments == seg]
            a, b = int(np.flatnonzero(ids == start)[0]), int(np.flatnonzero(ids == end)[0])
            assert tuple((ids[a + 1:b] - layout.audio_offset).tolist()) in all_codes


def test_encode_split_writes_its_cache_and_adds_the_split(trained, data_dir, capsys):
    """`chorus codec encode --split S` (make reproduce): the split's RecordCache under the
    run's producer key, and S joins the splits of the run's corpus_codes.json."""
    workdir, *_ = trained
    assert main(["encode", "--workdir", workdir, "--split", "test"]) == 0
    with open(os.path.join(workdir, "corpus_codes.json")) as f:
        record = json.load(f)
    assert record["splits"] == ["test", "train"] and record["data_dir"] == data_dir
    cache = RecordCache.open(data_dir, record["producer_key"], "test")
    source = open_source("chorus_speech", data_dir, "test")
    assert list(cache.ids) == [r.id for r in encodable_records(source, 640)]
    assert f"{cache.path}: {len(cache)} records as codes" in capsys.readouterr().out


def test_voice_table_is_written_with_a_new_cache_or_when_missing(trained):
    """A resumed flow stage (its cache complete, voices.json there) does not rewrite the
    voice table; a missing one is written again, the same."""
    workdir, *_ = trained
    settings = run_settings(workdir)
    path = os.path.join(workdir, "voices.json")
    with open(path) as f:
        voices = json.load(f)
    before = os.stat(path)
    corpus_cache(settings, workdir)
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    os.remove(path)
    corpus_cache(settings, workdir)
    with open(path) as f:
        assert json.load(f) == voices


def test_encode_decode_eval(trained, data_dir, tmp_path, capsys):
    workdir, *_ = trained
    source = open_source("chorus_speech", data_dir, "test")
    wave = read_record(source[0], DEFAULT_FIELDS, ENCODE_LIMITS).wave
    wav = str(tmp_path / "in.wav")
    sf.write(wav, wave, 16000)
    codes_path = str(tmp_path / "codes.npy")
    assert main(["encode", wav, codes_path, "--workdir", workdir]) == 0
    codes = np.load(codes_path)
    assert codes.dtype == np.int32 and codes.shape == (-(-(wave.size // 160) // 4),)
    assert codes.min() >= 0 and codes.max() < 1000
    out = str(tmp_path / "out.wav")
    assert main(["decode", codes_path, out, "--workdir", workdir, "--speaker", wav,
                 "--stream"]) == 0
    decoded, rate = sf.read(out, dtype="float32")
    assert rate == 16000 and decoded.shape == (codes.size * 640,)
    assert np.all(np.isfinite(decoded)) and np.abs(decoded).max() > 0
    voice = sorted(json.load(open(os.path.join(workdir, "voices.json"))))[0]
    assert main(["decode", codes_path, out, "--workdir", workdir, "--voice", voice]) == 0
    assert main(["eval", "--workdir", workdir, "--limit", "2"]) == 0
    with open(os.path.join(workdir, "eval.json")) as f:
        results = json.load(f)
    assert results["utterances"] == 2
    assert 25.0 <= results["codes_per_second"] <= 26.0
    assert set(results["resynthesis"]) == {"neural", "griffin-lim", "copy"}
    # Streamed = offline up to fp32 rounding: measured 2.7e-7 on a wave peaking near 0.5;
    # 2e-6 fails a vocoder window 2 frames short of its lookahead (7e-5, under the old 1e-3).
    assert results["streaming"]["max_abs_diff_vs_offline"] < 2e-6
    assert os.path.isfile(os.path.join(workdir, "eval.md"))
    capsys.readouterr()


def test_cli_errors_are_clear(trained, tmp_path, capsys):
    workdir, *_ = trained
    empty = str(tmp_path / "empty.wav")
    sf.write(empty, np.zeros(0, np.float32), 16000)
    assert main(["encode", empty, str(tmp_path / "c.npy"), "--workdir", workdir]) == 2
    assert "empty.wav: expected audio, got 0 samples" in capsys.readouterr().err
    nan = str(tmp_path / "nan.wav")
    sf.write(nan, np.full(4000, np.nan, np.float32), 16000, subtype="FLOAT")
    assert main(["encode", nan, str(tmp_path / "c.npy"), "--workdir", workdir]) == 2
    assert "NaN" in capsys.readouterr().err
    bad = str(tmp_path / "bad.npy")
    np.save(bad, np.asarray([0.5, 1.5]))
    assert main(["decode", bad, str(tmp_path / "o.wav"), "--workdir", workdir]) == 2
    assert "expected integer codes" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o.wav")
    assert main(["decode", bad, str(tmp_path / "o.wav"), "--workdir", str(tmp_path)]) == 2
    assert "chorus train --experiment codec" in capsys.readouterr().err
    assert main(["eval", "--workdir", workdir, "--data", str(tmp_path / "gone")]) == 2
    assert "pass --data DIR" in capsys.readouterr().err
    assert main(["nope"]) == 2
