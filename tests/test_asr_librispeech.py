"""The documented LibriSpeech path (docs/asr_librispeech.md) through the `chorus` CLI on a tiny
prepared `librispeech` TFDS directory (tests/librispeech_layout.py; eSpeak utterances with
LibriSpeech's upper-case transcripts): `chorus data tokenizer`, `chorus train --experiment asr`
on train_clean100 with dev_clean as the eval loop's split, `chorus eval` reporting test_clean
and test_other, `chorus transcribe` of a FLAC file."""

import json
import math
import os

import pytest
from asr_runs import RUN, sets
from librispeech_layout import flac_bytes, write_librispeech

from chorus import cli
from chorus.audio.io import to_int16
from chorus.config import ConfigError, load_config
from data_pipelines.synthesis import synthesize
from data_pipelines.tokenizer import TextTokenizer
from data_pipelines.voices import VOICES
from experiments.asr.experiment import corpus_tokenizer
from experiments.asr.settings import asr_settings

TEXTS = {
    "train_clean100": ["HE HOPED THERE WOULD BE STEW FOR DINNER", "STUFF IT INTO YOU",
                       "HIS BELLY COUNSELLED HIM", "AFTER EARLY NIGHTFALL THE YELLOW LAMPS",
                       "HELLO BERTIE ANY GOOD IN YOUR MIND", "NUMBER TEN FRESH NELLY"],
    "dev_clean": ["THE CAT SAT ON THE MAT", "HE'S WAITING ON YOU"],
    "test_clean": ["A COLD LUCID INDIFFERENCE", "THE YELLOW LAMPS WOULD LIGHT UP"],
    "test_other": ["I HAD A GOOD MIND", "HER FATHER IS A DEALER"],
}
VOCAB = 112  # pieces: as many as the six training transcripts yield exactly
LIBRISPEECH = [f"model.text_vocab_size={VOCAB}", "experiment.dataset=librispeech",
               "experiment.train_split=train_clean100", "experiment.eval_split=dev_clean",
               "experiment.eval_splits=[test_clean, test_other]"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """DIR/librispeech/default/2.1.1 with the four splits, the TFDS data_dir of the commands."""
    out = str(tmp_path_factory.mktemp("tfds"))
    splits, seed = {}, 0
    for split, texts in TEXTS.items():
        splits[split] = []
        for text in texts:
            wave, _ = synthesize(text.lower(), voice="en-us+m3", rate=200, seed=seed)
            splits[split].append((to_int16(wave), text))
            seed += 1
    write_librispeech(out, splits)
    return out, splits


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_librispeech_tokenizer_stats_and_the_vocab_size_check(data_dir, capsys):
    folder, splits = data_dir
    assert cli.main(["data", "tokenizer", "--data", folder, "--name", "librispeech",
                     "--split", "train_clean100", "--vocab-size", str(VOCAB)]) == 0
    out = _lines(capsys.readouterr().out)
    path = os.path.join(folder, "tokenizer.model")
    texts = len(TEXTS["train_clean100"]) + len(VOICES)  # + "speaker N" per chorus voice
    assert out == [f"wrote {path}: {VOCAB} pieces from {texts} texts"]
    tok = TextTokenizer.from_file(path)
    assert all(tok.decode(tok.encode(t)) == t for t in TEXTS["train_clean100"])
    # stdout is the JSON alone (tfds's no-TensorFlow banner kept off it)
    assert cli.main(["data", "stats", folder, "--name", "librispeech", "--json",
                     "--splits", ",".join(TEXTS)]) == 0
    stats = json.loads(capsys.readouterr().out)
    for split, utterances in splits.items():
        assert stats[split]["examples"] == len(utterances)
        assert stats[split]["hours"] == pytest.approx(
            sum(len(s) for s, _ in utterances) / 16_000 / 3600, rel=1e-6)
    # the model's text ids are the tokenizer's pieces: any other size is refused, by name
    for size in (VOCAB - 8, 128):
        config = load_config("cpu-tiny", [*RUN, *LIBRISPEECH, f"experiment.data_dir={folder}",
                                          f"model.text_vocab_size={size}"])
        with pytest.raises(ConfigError, match=rf"model.text_vocab_size: expected the {VOCAB} "
                                              rf"pieces of {path} .*got {size}$"):
            corpus_tokenizer(config, asr_settings(config))
    config = load_config("cpu-tiny", [*RUN, *LIBRISPEECH, f"experiment.data_dir={folder}"])
    assert corpus_tokenizer(config, asr_settings(config)).vocab_size == VOCAB


@pytest.mark.slow  # ~2 min on a shared 2-core host: a training run, its eval, a transcription
def test_librispeech_train_eval_transcribe(data_dir, tmp_path, capsys):
    folder, splits = data_dir
    if not os.path.exists(os.path.join(folder, "tokenizer.model")):
        assert cli.main(["data", "tokenizer", "--data", folder, "--name", "librispeech",
                         "--split", "train_clean100", "--vocab-size", str(VOCAB)]) == 0
    tok = TextTokenizer.from_file(os.path.join(folder, "tokenizer.model"))
    run = tmp_path / "run"
    assert cli.main(["train", "--experiment", "asr", "--workdir", str(run), "--data", folder,
                     "--quiet", *sets(*RUN, *LIBRISPEECH, "train.steps=2")]) == 0
    with open(run / "assets" / "tokenizer.model", "rb") as a, \
            open(os.path.join(folder, "tokenizer.model"), "rb") as b:
        assert a.read() == b.read()  # inference needs the run directory alone
    with open(run / "metrics.jsonl") as f:
        steps = [json.loads(line) for line in f if '"event"' not in line]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["tokens"] > 0 for r in steps)

    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(run)]) == 0
    with open(run / "eval" / "asr_eval.json") as f:
        report = json.load(f)
    # the eval loop's loss is over dev_clean: its transcripts' tokens + <eos> each
    assert report["tokens"] == sum(len(tok.encode(t)) + 1 for t in TEXTS["dev_clean"])
    for split in ("test_clean", "test_other"):
        assert report[split]["utterances"] == 2
        assert [e["reference"] for e in report[split]["examples"]] == TEXTS[split]
        assert report[split]["audio_seconds"] == pytest.approx(
            sum(len(s) for s, _ in splits[split]) / 16_000, abs=0.02)
        assert 0 <= report[split]["wer"] and report[split]["identical_to_greedy"] == 1.0
    rows = [line.split(" | ")[0] for line in (run / "eval" / "asr_eval.md").read_text()
            .splitlines()[2:] if line.startswith("| ")]
    assert rows == ["| test_clean", "| test_other"]

    samples, _ = splits["test_clean"][0]
    flac = tmp_path / "1089-134686-0000.flac"
    flac.write_bytes(flac_bytes(samples))
    capsys.readouterr()
    assert cli.main(["transcribe", "--workdir", str(run), str(flac)]) == 0
    line = json.loads(_lines(capsys.readouterr().out)[-1])
    assert line["file"] == str(flac) and line["step"] == 2 and isinstance(line["text"], str)
    assert line["audio_seconds"] == pytest.approx(len(samples) / 16_000, abs=0.01)
