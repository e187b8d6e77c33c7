"""End to end through `chorus codec`: train (a few steps) -> encode -> decode -> eval."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from chorus.codec.cli import main
from chorus.codec.compile import fast_compile
from chorus.codec.corpus import Corpus
from chorus.codec.testing import TINY_OVERRIDES


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    # These tests are compile-bound: XLA optimization level 0 halves their CPU time.
    with fast_compile():
        yield

STEPS = [f"--set={m}.train.{k}={v}" for m in ("speaker", "tokenizer", "flow", "vocoder")
         for k, v in (("steps", 1), ("log_every", 1), ("batch_size", 2))]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    w = str(tmp_path_factory.mktemp("codec"))
    sets = [f"--set={o}" for o in TINY_OVERRIDES] + STEPS
    assert main(["train", "--preset", "cpu-tiny", "--workdir", w, *sets]) == 0
    return w


def test_train_writes_resumable_workdir(workdir, capsys):
    folder = os.path.join(workdir, "codec")
    for name in ("codec_config.json", "mel_stats.npz", "voices.json", "train_summary.json",
                 "analysis.npz",
                 "speaker.ckpt", "tokenizer.ckpt", "flow.ckpt", "vocoder.ckpt"):
        assert os.path.isfile(os.path.join(folder, name)), name
    assert not [f for f in os.listdir(folder) if f.startswith(".tmp-")]  # atomic writes only
    # A second run finds every stage finished; a changed config is refused.
    sets = [f"--set={o}" for o in TINY_OVERRIDES] + STEPS
    assert main(["train", "--preset", "cpu-tiny", "--workdir", workdir, *sets]) == 0
    assert "[flow] done at step 1" in capsys.readouterr().out
    assert main(["train", "--preset", "cpu-tiny", "--workdir", workdir, *sets,
                 "--set=flow.dim=48"]) == 2
    assert "flow.dim" in capsys.readouterr().err


def test_encode_decode_eval(workdir, tmp_path, capsys):
    corpus = Corpus.load(os.path.join(workdir, "codec", "corpus", "eval.npz"))
    wav = str(tmp_path / "in.wav")
    sf.write(wav, corpus.waves[0], 16000)
    codes_path = str(tmp_path / "codes.npy")
    assert main(["encode", wav, codes_path, "--workdir", workdir]) == 0
    codes = np.load(codes_path)
    frames = corpus.waves[0].size // 160
    assert codes.dtype == np.int32 and codes.shape == (-(-frames // 4),)
    assert codes.min() >= 0 and codes.max() < 1000
    # (Offline decoding with both vocoders runs inside eval below.)
    out = str(tmp_path / "out.wav")
    assert main(["decode", codes_path, out, "--workdir", workdir, "--speaker", wav,
                 "--stream"]) == 0
    wave, rate = sf.read(out, dtype="float32")
    assert rate == 16000 and wave.shape == (codes.size * 640,)
    assert np.all(np.isfinite(wave)) and np.abs(wave).max() > 0
    assert main(["eval", "--workdir", workdir, "--limit", "2"]) == 0
    with open(os.path.join(workdir, "codec", "eval.json")) as f:
        results = json.load(f)
    assert results["utterances"] == 2
    assert 25.0 <= results["codes_per_second"] <= 26.0
    assert set(results["resynthesis"]) == {"neural", "griffin-lim", "copy"}
    assert results["streaming"]["max_abs_diff_vs_offline"] < 1e-3
    assert results["speaker"]["seen_voices"]["voices"] == 2
    assert os.path.isfile(os.path.join(workdir, "codec", "eval.md"))
    capsys.readouterr()


def test_cli_errors_are_clear(workdir, tmp_path, capsys):
    empty = str(tmp_path / "empty.wav")
    sf.write(empty, np.zeros(0, np.float32), 16000)
    assert main(["encode", empty, str(tmp_path / "c.npy"), "--workdir", workdir]) == 2
    assert "empty waveform" in capsys.readouterr().err
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
    assert "chorus codec train" in capsys.readouterr().err
    assert main(["nope"]) == 2
