"""The TTS evaluation table (experiments/tts/evaluate.py) and its judges (judges.py): the
pocketsphinx judge on the tiny corpus' eSpeak audio, the aggregation against hand-computed
figures, DNSMOS, the written artifacts, and the one-line errors of bad inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from experiments.tts.evaluate import (
    REFERENCE,
    EvalError,
    Item,
    codec_resynthesis,
    evaluate,
    ground_truth,
    load_items,
    report_markdown,
    score_system,
    summarize,
)
from experiments.tts.judges import (
    ChorusAsrJudge,
    CodecSpeaker,
    Dnsmos,
    JudgeError,
    Judges,
    SphinxJudge,
    corpus_texts,
    sphinx_lm,
)
from experiments.tts.target import SpeechTarget


def target(i: int, text: str, tag: str | None = None, voice: str = "en-us") -> SpeechTarget:
    tagged = f"{tag} {text}" if tag else text
    return SpeechTarget(id=f"r{i}", text=text, tagged_text=tagged, instruction="", voice=voice,
                        speaker_id=i, rate=175, pitch=50, volume=100)


@pytest.fixture(scope="module")
def sphinx(tiny_asr_corpus, tmp_path_factory):
    """(corpus-LM judge, default-LM judge, the 10 held-out items, the LM of the 30 train
    texts)."""
    lm = sphinx_lm(corpus_texts(tiny_asr_corpus).texts, str(tmp_path_factory.mktemp("lm")))
    items = load_items(tiny_asr_corpus, "test", 10)
    return SphinxJudge(lm), SphinxJudge(None), items, lm


def test_sphinx_corpus_lm_beats_its_default_lm_on_espeak(sphinx):
    from chorus.eval.text_metrics import error_rates

    corpus, default, items, lm = sphinx
    refs = [it.target.text for it in items]
    waves = [it.wave for it in items]
    with_corpus = error_rates(refs, corpus.transcribe(waves))["wer"]
    with_default = error_rates(refs, default.transcribe(waves))["wer"]
    # Measured on these 10 clips (eSpeak voice variants incl. whisper and croak; an LM of 30
    # sentences): corpus LM 0.72, default LM 0.93 (24 reproduce-corpus clips with an LM of
    # 8150 train texts: 0.73 vs 0.98). The corpus' words must make it clearly better.
    assert with_corpus < 0.8, with_corpus
    assert with_corpus < with_default - 0.15, (with_corpus, with_default)
    # full-utterance CMN: a clip's transcript does not depend on what was decoded before it
    assert corpus.transcribe(waves[::-1])[::-1] == corpus.transcribe(waves)
    assert corpus.transcribe([np.zeros(16000, np.float32)]) == [""]
    with open(lm.arpa) as f:
        assert "\\3-grams:" in f.read()  # ArpaBoLM's trigram


def test_sphinx_lm_is_cached_by_its_texts(tmp_path):
    a = sphinx_lm(["turn on the light", "turn off the light"], str(tmp_path))
    mtime = os.path.getmtime(a.arpa)
    again = sphinx_lm(["turn off the light", "turn on the light"][::-1], str(tmp_path))
    assert again.arpa == a.arpa and os.path.getmtime(a.arpa) == mtime  # reused, not rewritten
    other = sphinx_lm(["zorblax the light"], str(tmp_path))
    assert other.arpa != a.arpa and other.oov == ("zorblax",)  # no CMU pronunciation
    with open(a.dictionary) as f:
        words = {line.split()[0].split("(")[0] for line in f}
    assert words == {"turn", "on", "off", "the", "light"}


class ScriptedAsr:
    """An ASR judge that hears what it is told (the aggregation's ground truth)."""

    def __init__(self, name: str, hyps: dict[int, str]):
        self.name, self.hyps = name, hyps

    def transcribe(self, waves):
        return [self.hyps[int(w.size)] for w in waves]


class SizeSpeaker:
    """Embeds a clip as (1, size / 1000): known cosines."""

    name = "size_sim"

    def embed(self, wave):
        return np.array([1.0, wave.size / 1000.0])


def test_aggregation_against_hand_computed_figures():
    items = [Item(target(0, "turn on the light", voice="seen-a"), np.full(1000, 0.1, np.float32)),
             Item(target(1, "open the door now", "(softly)", "seen-a"),
                  np.full(2000, 0.1, np.float32)),
             Item(target(2, "good night", "(softly)", "unseen-b"),
                  np.full(3000, 0.1, np.float32))]
    # The system doubles clip 1's length (so its speaker cosine is below 1) and keeps the others.
    waves = {"r0": np.full(1000, .1, np.float32), "r1": np.full(4000, .1, np.float32),
             "r2": np.full(3000, .1, np.float32)}
    timings = {"r0": {"total_s": 0.5, "first_packet_ms": 100.0},
               "r1": {"total_s": 1.0, "first_packet_ms": 300.0},
               "r2": {"total_s": 0.25, "first_packet_ms": 200.0}}

    def system(targets):
        return [(waves[t.id], timings[t.id]) for t in targets]

    def controls(targets, ws):
        return [{"rate": {"r0": 0.1, "r1": 0.3, "r2": 0.5}[t.id], "pitch": 2.0} for t in targets]

    asr = ScriptedAsr("scripted", {1000: "turn on the light", 4000: "open a door",
                                   3000: "good knight"})
    judges = Judges(asr=[asr], speakers=[SizeSpeaker()], seen_voices=frozenset({"seen-a"}))
    rows = score_system("sys", items, system, judges, controls)
    s = summarize(rows, judges)
    # WER by hand: r0 0 edits / 4 words; r1 "open the door now" -> "open a door": 1 sub + 1
    # del = 2 / 4; r2 "good night" -> "good knight": 1 / 2. Corpus level: 3 / 10 words.
    assert s["scripted"]["wer"] == pytest.approx(3 / 10, abs=1e-12)  # exact counts
    assert [r["asr"]["scripted"]["wer"] for r in rows] == pytest.approx([0, 0.5, 0.5], abs=1e-12)
    # CER by hand (spaces count): r1 "open the door now"(17) -> "open a door"(11): "the" ->
    # "a" is 1 sub + 2 del, " now" is 4 del: 7; r2 "good night"(10) -> "good knight": 1 ins.
    assert s["scripted"]["cer"] == pytest.approx(8 / (17 + 17 + 10), abs=1e-12)
    # speaker cosine of (1, 4) and (1, 2): 9 / sqrt(17 * 5); r0 and r2 are their own clip.
    c = 9 / np.sqrt(17 * 5)
    assert s["size_sim"]["seen"] == pytest.approx((1 + c) / 2, abs=1e-12)
    assert s["size_sim"]["unseen"] == pytest.approx(1.0, abs=1e-12)
    assert (s["size_sim"]["seen_n"], s["size_sim"]["unseen_n"]) == (2, 1)
    # RTF: 1.75 s of compute for (1000 + 4000 + 3000) / 16000 = 0.5 s of audio
    assert s["rtf"] == pytest.approx(1.75 / 0.5, abs=1e-12)
    assert s["first_packet_ms"]["mean"] == pytest.approx(200.0, abs=1e-12)
    assert s["first_packet_ms"]["p50"] == pytest.approx(200.0, abs=1e-12)
    ctl = s["controls"]
    assert ctl["per_control"]["rate"] == pytest.approx(0.3, abs=1e-12)
    assert ctl["per_tag"]["(softly)"]["rate"] == pytest.approx(0.4, abs=1e-12)
    assert ctl["per_tag"]["none"] == pytest.approx({"rate": 0.1, "pitch": 2.0, "n": 1})
    table = report_markdown({"judges": {"asr": ["scripted"], "quality": None,
                                        "speakers": ["size_sim"]}, "systems": {"sys": s}})
    assert "| sys | 0.300 |" in table and "(softly)" in table


def test_dnsmos_is_a_bounded_score_that_prefers_speech_to_noise(tiny_asr_corpus):
    item = load_items(tiny_asr_corpus, "test", 1)[0]
    noise = np.random.default_rng(0).standard_normal(item.wave.size).astype(np.float32) * 0.3
    speech, hiss, silence = Dnsmos().score([item.wave, noise, np.zeros(8000, np.float32)])
    for s in (speech, hiss):
        assert all(np.isfinite(v) and 1.0 <= v <= 5.0 for v in s.values()), s
    assert speech["ovrl"] > hiss["ovrl"] + 0.3 and speech["bak"] > hiss["bak"]
    assert all(np.isnan(v) for v in silence.values())  # no score for silence


def test_table_writes_json_markdown_samples_and_tensorboard(sphinx, tmp_path):
    from codec_fixtures import random_codec
    from tensorboard_events import read_events

    from chorus.codec.compile import fast_compile

    corpus, _, items, _ = sphinx
    items = items[:2]
    codec = random_codec()
    judges = Judges(asr=[corpus], quality=Dnsmos(), speakers=[CodecSpeaker(codec)],
                    seen_voices=frozenset({items[0].target.voice}))
    with fast_compile():  # the random codec's jits: compile-bound
        report = evaluate(items, {REFERENCE: ground_truth(items),
                                  "codec resynthesis": codec_resynthesis(codec, items)},
                          judges, str(tmp_path), samples=2)
    ref, resynth = report["systems"][REFERENCE], report["systems"]["codec resynthesis"]
    assert ref["codec_sim"]["all"] == pytest.approx(1.0, abs=1e-6)  # each clip vs itself
    assert resynth["codec_sim"]["all"] < 0.999  # random codec: another sound
    assert resynth["rtf"] > 0 and "rtf" not in ref
    assert ref["sphinx"]["wer"] < resynth["sphinx"]["wer"]
    with open(tmp_path / "tts_eval.json") as f:
        assert json.load(f)["systems"][REFERENCE]["utterances"] == 2
    md = (tmp_path / "tts_eval.md").read_text()
    assert md.splitlines()[2].startswith(f"| {REFERENCE} |")  # the reference row first
    for system in ("ground_truth", "codec_resynthesis"):
        files = sorted(os.listdir(tmp_path / "samples" / system))
        assert len([f for f in files if f.endswith(".wav")]) == 2
        assert len([f for f in files if f.endswith(".png")]) == 2
    png = next(f for f in files if f.endswith(".png"))
    with open(tmp_path / "samples" / "codec_resynthesis" / png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    tags = {v.tag for e in read_events(str(tmp_path / "tensorboard")) for v in e.summary.value
            if v.HasField("audio")}
    assert tags == {f"tts_eval/{s}/{i}" for s in ("ground_truth", "codec_resynthesis")
                    for i in (0, 1)}


def test_bad_inputs_fail_on_one_line(tmp_path, tiny_asr_corpus):
    def one_line(excinfo, *words):
        message = str(excinfo.value)
        assert "\n" not in message and all(w in message for w in words), message

    with pytest.raises(JudgeError) as e:
        ChorusAsrJudge.load("")
    one_line(e, "experiment.asr_run", "got ''")
    with pytest.raises(JudgeError) as e:
        ChorusAsrJudge.load(str(tmp_path / "missing"))
    one_line(e, "experiment.asr_run", "config.json", "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(JudgeError) as e:
        ChorusAsrJudge.load(str(broken))
    one_line(e, "experiment.asr_run", "cannot load", "broken")
    with pytest.raises(JudgeError) as e:
        corpus_texts(str(tmp_path / "nodata"))
    one_line(e, "nodata", "chorus_speech")
    with pytest.raises(EvalError) as e:
        load_items(tiny_asr_corpus, "no_such_split", 2)
    one_line(e, "no_such_split")

    items = [Item(target(0, "hello"), np.full(1600, 0.1, np.float32))]
    judges = Judges(asr=[ScriptedAsr("s", {1600: "hello"})])
    with pytest.raises(EvalError) as e:
        score_system("short", items, lambda ts: [], judges)
    one_line(e, "short", "expected 1 syntheses, got 0")
    with pytest.raises(EvalError) as e:
        score_system("nan", items, lambda ts: [(np.full(1600, np.nan), {})], judges)
    one_line(e, "nan", "r0", "finite")
    with pytest.raises(JudgeError):
        Judges(asr=[])


def _eval(workdir, *sets):
    from chorus.training.cli import eval_main

    return eval_main(["--workdir", workdir, *[a for s in sets for a in ("--set", s)]])


def test_chorus_eval_names_a_bad_asr_run_on_one_line(tiny_tts_stack, tmp_path, capsys):
    # The judges are built before any TTS model loads: a bad judge run fails first.
    assert _eval(tiny_tts_stack["tts"], f"experiment.asr_run={tmp_path}/nope") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "experiment.asr_run" in err and "nope" in err, err


@pytest.mark.slow
def test_chorus_eval_writes_the_table_of_a_tts_run(tiny_tts_stack, tiny_asr_run, capsys):
    """`chorus eval --workdir TTS`: the run's own row beside the reference rows, with RTF and
    first-packet latency (needs experiments/tts/synthesizer.py, the synthesizer branch)."""
    run = tiny_tts_stack["tts"]
    # 8 records: the tiny codec knows few voices, and a record whose voice it does not know
    # needs another recording of that voice to be prompted (the first 4 test records of the
    # tiny corpus have neither since test_voices took 35 voices out of the other splits)
    examples = 8
    assert _eval(run, f"experiment.asr_run={tiny_asr_run}", f"experiment.eval_examples={examples}",
                 "experiment.decoding.max_codes_per_char=0.5") == 0
    with open(os.path.join(run, "eval", "test", "tts_eval.json")) as f:
        report = json.load(f)
    systems = report["systems"]
    assert set(systems) == {REFERENCE, "codec resynthesis", "tts"}
    tts = systems["tts"]
    # records whose voice neither the codec knows nor has another recording are left out
    n = examples + 2 - report["unpromptable_skipped"]  # + rows of held-out voices
    assert 1 <= tts["utterances"] <= n and tts["rtf"] > 0
    assert tts["first_packet_ms"]["mean"] > 0
    for name in ("sphinx", "sphinx_default_lm", "chorus_asr"):
        assert 0 <= systems[REFERENCE][name]["cer"] <= tts[name]["cer"] + 1.0
    assert systems[REFERENCE]["codec_sim"]["all"] == pytest.approx(1.0, abs=1e-6)
    assert len(os.listdir(os.path.join(run, "eval", "test", "samples", "tts"))) == 2 * min(
        3, tts["utterances"])  # a WAV + a mel PNG per sample
    printed = json.loads(capsys.readouterr().out)
    assert printed["test"]["tts"]["utterances"] == tts["utterances"]


def test_tts_eval_verb_refuses_bad_runs_on_one_line(tiny_tts_stack, tmp_path, capsys):
    from experiments.tts.evaluate import main

    assert main(["--runs", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("chorus tts-eval: ") and "absent" in err
    run = tiny_tts_stack["tts"]
    assert main(["--runs", run, run, "--out", str(tmp_path / "o")]) == 2
    assert "two runs named 'tts'" in capsys.readouterr().err
    assert main(["--runs", run, "--out", str(tmp_path / "o"),
                 "--set", "experiment.asr_run=/no/asr"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "experiment.asr_run" in err, err
