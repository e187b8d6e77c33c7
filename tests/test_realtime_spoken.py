"""The realtime mode's spoken answers: every persona answer (personas.every_answer), their
speech cache (experiments/realtime/answer_speech.py), the dialogue regime's spoken target, and
a spoken SFT run end to end (train, the spoken table of `chorus eval`, `chorus chat` through
the run's own codec)."""

import json
import os

import numpy as np
import pytest
from codec_fixtures import random_codec

from chorus.vocab import VocabLayout
from data_pipelines.lexicon import DEFAULT_LEXICON
from data_pipelines.personas import (
    AGES,
    DECLINES,
    decline,
    every_answer,
    sample_exchange,
    sample_persona,
    split_lexicon,
)
from data_pipelines.record_cache import CacheError, RecordCache
from data_pipelines.records import Record, Skip
from data_pipelines.regime import ExampleInputs
from data_pipelines.synthesis import synthesize
from experiments.realtime import DialogueRegime
from experiments.realtime.answer_speech import answer_codes, build_answer_speech, split_name

LAYOUT = VocabLayout(text_size=128, num_audio_codes=1000)


def test_every_answer_holds_each_answer_a_card_can_give():
    answers = set(every_answer())
    lex = DEFAULT_LEXICON
    pairs = len(lex.likes) * (len(lex.likes) - 1)
    facts = len(lex.names) + len(AGES) + len(lex.places) + len(lex.jobs) + pairs
    # each style's templates differ by kind, the terse one ("{fact}.") shares name/home/job/age
    # strings only where the facts are equal words, so the count is exact up to those
    assert len(answers) <= len(lex.styles) * (facts + 1)
    assert len(answers) > 0.99 * len(lex.styles) * facts
    rng = np.random.default_rng(5)
    for lexicon in (DEFAULT_LEXICON, *split_lexicon()):
        for _ in range(300):
            assert sample_exchange(rng, lexicon).answer in answers
            assert decline(sample_persona(rng, lexicon)) in answers
    assert set(DECLINES.values()) <= answers


def test_answer_speech_is_the_codec_codes_of_the_espeak_answer(tmp_path, monkeypatch):
    import data_pipelines.synthesis

    # eSpeak's samples depend on what the process spoke before (data_pipelines/espeak.py):
    # keep the waves the cache was made from
    spoken = {}

    def speak(text, voice="en-us", **kwargs):
        spoken[text] = (voice, synthesize(text, voice=voice, **kwargs)[0])
        return spoken[text][1], None

    monkeypatch.setattr(data_pipelines.synthesis, "synthesize", speak)
    codec = random_codec()
    texts = ["My name is Maya.", "Can't help with that."]
    cache = build_answer_speech(codec, str(tmp_path), "en-gb+f3", texts)
    assert cache.meta.split == split_name("en-gb+f3") and len(cache) == 2
    assert cache.meta.attrs["num_codes"] == codec.cfg.fsq.num_codes
    for text in texts:
        voice, wave = spoken[text]
        assert voice == "en-gb+f3" and wave.size > 8000
        np.testing.assert_array_equal(answer_codes(cache, text), codec.encode(wave))
    assert answer_codes(cache, "I am fond of chess.") is None
    # the same answers: reused, not rewritten; other answers: rebuilt
    stamp = os.path.getmtime(cache.path)
    assert build_answer_speech(codec, str(tmp_path), "en-gb+f3", texts).path == cache.path
    assert os.path.getmtime(cache.path) == stamp
    again = build_answer_speech(codec, str(tmp_path), "en-gb+f3", texts[:1])
    assert len(again) == 1 and answer_codes(again, texts[1]) is None
    with pytest.raises(ValueError, match="voice: expected one of"):
        build_answer_speech(codec, str(tmp_path), "en-mars", texts)
    with pytest.raises(ValueError, match="expected non-empty answers"):
        build_answer_speech(codec, str(tmp_path), "en-us", ["ok", " "])
    with pytest.raises(CacheError, match="missing"):
        RecordCache.open(str(tmp_path), cache.meta.producer_key, split_name("en-us"))


def test_pocketsphinx_with_the_answers_lm_hears_espeak_answers(tmp_path):
    from chorus.eval.text_metrics import error_rates
    from experiments.realtime.spoken import answer_judge

    judge = answer_judge(str(tmp_path))
    texts = ["I work as a teacher.", "Fishing and knitting.", "My name is Maya.",
             "I reside in Lisbon.", "Folks call me Omar.", "I am fond of chess and tea."]
    heard = judge.transcribe([synthesize(t, voice="en-us")[0] for t in texts])
    right = error_rates(texts, heard)["cer"]
    wrong = error_rates(texts[1:] + texts[:1], heard)["cer"]
    assert right < 0.6 and wrong > right + 0.3, (heard, right, wrong)


def _encode(text: str) -> np.ndarray:
    return np.array([ord(c) % 128 for c in text], np.int32)


def test_the_spoken_target_is_the_answer_then_its_codes_then_tts_end(tmp_path):
    codec = random_codec()
    cache = build_answer_speech(codec, str(tmp_path), "en-us", ["I reside in Oslo."])
    record = Record(wave=np.zeros(1600, np.float32), text="Hi! Where do you live?",
                    speaker="3", id="d7", instruction="", tagged_text="",
                    persona="name: Ada. age: 34. home: Oslo. job: baker. likes: chess and "
                            "rain. style: formal.", answer="I reside in Oslo.")
    ex = ExampleInputs(record=record, features=np.zeros((37, 128), np.float32), cached={},
                       encode=_encode, layout=LAYOUT, rng=None)
    s = LAYOUT.special
    text_only = DialogueRegime().stream(ex)
    stream = DialogueRegime(answer_codes=cache).stream(ex)
    codes = LAYOUT.audio_code_ids(answer_codes(cache, "I reside in Oslo."))
    np.testing.assert_array_equal(stream.tokens,
                                  np.concatenate([text_only.tokens, codes, [s("<tts_end>")]]))
    np.testing.assert_array_equal(
        stream.targets[stream.loss_mask > 0],
        np.concatenate([_encode("I reside in Oslo."), [s("<tts_start>")], codes,
                        [s("<tts_end>")]]))
    assert stream.prompt_length == text_only.prompt_length
    weighted = DialogueRegime(answer_codes=cache, speech_weight=0.25).stream(ex)
    spoken = slice(len(text_only.tokens) - 1, len(stream.tokens) - 1)  # codes + <tts_end>
    np.testing.assert_array_equal(weighted.loss_mask[spoken], 0.25)
    np.testing.assert_array_equal(weighted.loss_mask[:spoken.start], stream.loss_mask[
        :spoken.start])
    with pytest.raises(ValueError, match="DialogueRegime.speech_weight"):
        DialogueRegime(speech_weight=0)
    ref = DialogueRegime(answer_codes=cache).reference(ex)
    np.testing.assert_array_equal(ref["question_wave"], record.wave)
    # a fresh card's answer the cache lacks is skipped and counted, never spoken wrong
    fresh = DialogueRegime(fresh_cards=1.0, answer_codes=cache)
    skip = fresh.stream(ExampleInputs(record=record, features=ex.features, cached={},
                                      encode=_encode, layout=LAYOUT,
                                      rng=np.random.default_rng(0)))
    assert isinstance(skip, Skip) and skip.reason == "missing_cache_entry"


def test_spoken_settings_are_checked():
    from chorus.config import ConfigError
    from experiments.realtime.settings import RealtimeSettings

    with pytest.raises(ConfigError, match="experiment.answer_voice"):
        RealtimeSettings(answer_voice="klingon")
    with pytest.raises(ConfigError, match="experiment.speech_weight"):
        RealtimeSettings(speech_weight=-1.0)
    with pytest.raises(ConfigError, match="experiment.max_answer_codes"):
        RealtimeSettings(max_answer_codes=0)


@pytest.mark.slow
def test_spoken_sft_eval_and_chat_end_to_end(tiny_tts_stack, tmp_path, capsys):
    """A 2-step spoken SFT from the tiny TTS run's backbone (its codes are the tiny codec's),
    its spoken table, and `chorus chat` on it with no --codec (the run names its codec)."""
    from asr_runs import sets
    from test_realtime_cli import _card
    from tts_runs import TTS_SETS

    from chorus.audio.io import write_wav
    from chorus.cli import main as chorus
    from chorus.codec.pipeline import Codec
    from chorus.training.cli import eval_main, train_main

    data, codec_run = tiny_tts_stack["data_dir"], tiny_tts_stack["codec"]
    workdir = tmp_path / "spoken"
    run = [o for o in TTS_SETS if not o.startswith(("train.seq_len", "train.max_mel_frames",
                                                     "train.max_audio_clips"))] + [
        "train.seq_len=320", "train.max_mel_frames=640", "train.max_audio_clips=2",
        "train.steps=2", "train.log_every=1", "train.eval_steps=1",
        "train.checkpoint_every=1000", "audio.chunk_size=4",
        "experiment.eval_splits=[validation]", "experiment.eval_examples=2",
        "experiment.spoken_eval_examples=2", "experiment.max_answer_tokens=4",
        "experiment.max_answer_codes=12", f"experiment.codec_run={codec_run}",
        f"experiment.backbone_from={tiny_tts_stack['tts']}"]
    assert train_main(["--experiment", "realtime", "--workdir", str(workdir), "--data", data,
                       "--quiet", *sets(*run)]) == 0
    with open(workdir / "metrics.jsonl") as f:
        steps = [json.loads(line) for line in f if '"event"' not in line and "ce" in line]
    assert steps and all(np.isfinite(r["loss"]) for r in steps)
    assert eval_main(["--workdir", str(workdir)]) == 0
    spoken = json.loads((workdir / "eval" / "realtime_eval.json").read_text())["spoken"]
    assert spoken["turns"] == 2 and set(spoken["rows"]) == {"ground truth", "codec", "model"}
    assert spoken["judges"] == ["sphinx"]  # no experiment.asr_run: pocketsphinx alone
    truth = spoken["rows"]["ground truth"]
    assert all(0 <= r["cer"]["sphinx"] for r in spoken["rows"].values()
               if r["cer"]["sphinx"] is not None)
    assert truth["codec_ctc_cer"] is not None and -1 <= truth["speaker_sim"] <= 1
    assert 0 <= spoken["model"]["spoke"] <= 1 and 0 <= spoken["model"]["closed"] <= 1
    assert all(s["codes"] <= 12 for s in spoken["samples"])
    md = (workdir / "eval" / "realtime_eval.md").read_text()
    assert "| row | sphinx CER | codec CTC CER | speaker sim | seconds |" in md

    voice = sorted(Codec.load(codec_run, ("speaker",)).voices)[0]
    questions = []
    for k, text in enumerate(["Where do you live?", "What do you do for a living?"]):
        questions.append(str(tmp_path / f"q{k}.wav"))
        write_wav(questions[-1], synthesize(text)[0])
    out = tmp_path / "chat"
    rc = chorus(["chat", "--workdir", str(workdir), "--persona", _card(tmp_path, voice=voice),
                 "--out", str(out), "--max-codes", "12", "--max-text-tokens", "4", *questions])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "latencies.json").read_text())
    assert [t["turn"] for t in report["turns"]] == [0, 1] and report["warmup"] is True
    for k, turn in enumerate(report["turns"]):
        assert 0 < turn["first_audio_ms"] <= turn["answer_ms"]
        assert (out / f"turn_{k}.txt").exists() and (out / f"turn_{k}.wav").stat().st_size > 44
        assert 1 <= turn["codes"] <= 12 and turn["answer_seconds"] == turn["codes"] * 0.04
