"""The games of chorus' models, `chorus analyze` and the interactions experiment, on the tiny
runs: a game's values are the model's score of the masked input, the reports are complete
and consistent (efficiency), bad input is named, an interrupted experiment resumes."""

import json
import os

import numpy as np
import pytest

from chorus.analysis.game import coalition_masks, value_table
from chorus.analysis.players import audio_baseline, mask_axis, time_segments
from chorus.analysis.shapley import shapley_values
from chorus.cli import main as chorus


@pytest.fixture(scope="module")
def transcriber(tiny_asr_run):
    from experiments.asr.transcriber import load_transcriber

    return load_transcriber(str(tiny_asr_run))[0]


@pytest.fixture(scope="module")
def clip(tiny_asr_corpus):
    """(log-mel [T, n_mels], reference text, raw speech) of a test-split record."""
    from chorus.audio.mel import log_mel
    from data_pipelines.sources import open_source

    raw = open_source("chorus_speech", tiny_asr_corpus, "test")[0]
    wave = np.asarray(raw["speech"], np.float32) / 32768.0
    text = raw["text"].decode() if isinstance(raw["text"], bytes) else str(raw["text"])
    return log_mel(wave)[:200], text, wave[:200 * 160]


@pytest.fixture(scope="module")
def wav(clip, tmp_path_factory):
    from chorus.audio.io import write_wav

    path = str(tmp_path_factory.mktemp("analyze") / "clip.wav")
    write_wav(path, clip[2])
    return path


def test_audio_game_values_are_the_models_score_of_the_masked_clip(transcriber, clip):
    from experiments.asr.scoring import transcript_scorer
    from experiments.interactions.games import audio_game

    frames, text, _ = clip
    ids = transcriber.tokenizer.encode(text)
    players = time_segments(len(frames), 5)
    # batch 4 over 6 coalitions: the padded last chunk must not change the values
    game = audio_game(transcriber, frames, ids, players, "silence", batch=4)
    keep = coalition_masks(5)[[0, 3, 9, 17, 30, 31]]
    base = audio_baseline("silence", frames.shape, transcriber.config.audio.mel_mean)
    scorer = transcript_scorer(transcriber.asr.backbone, transcriber.layout, len(frames), ids)
    want = np.asarray(scorer(transcriber.params["backbone"],
                             mask_axis(frames, keep, players, base)))
    got = game.values(keep)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)  # fp32 forwards, two batchings
    assert got[-1] != got[0]  # the clip matters to the score


def test_text_game_players_are_the_words_and_masking_replaces_their_tokens(tiny_tts_stack):
    from experiments.interactions.games import text_game
    from experiments.tts.synthesizer import SpeechRequest, Synthesizer

    synth = Synthesizer.load(tiny_tts_stack["tts"], codec_run=tiny_tts_stack["codec"])
    tg = text_game(synth, SpeechRequest("turn on the (softly) light"), batch=8)
    assert tg.words == ("turn", "on", "the", "(softly)", "light")
    for word, (a, b) in zip(tg.words, tg.players.spans, strict=True):
        assert synth.tokenizer.decode([int(t) for t in tg.prompt[a:b]]).strip() == word
    table = value_table(tg.game)
    assert table.shape == (32,) and np.isfinite(table).all()
    phi = shapley_values(table)
    np.testing.assert_allclose(phi.sum(), table[-1] - table[0], atol=1e-9)
    with pytest.raises(ValueError, match="at least 2 words"):
        text_game(synth, SpeechRequest("hello"))


def test_chorus_analyze_interactions_on_audio_writes_a_consistent_report(
        tiny_asr_run, wav, tmp_path, capsys):
    out = tmp_path / "audio"
    assert chorus(["analyze", "interactions", "--workdir", str(tiny_asr_run), "--audio", wav,
                   "--out", str(out), "--players", "6", "--orders", "0,0.5,1",
                   "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((out / "interactions.json").read_text())
    assert summary["method"] == report["method"] == "exact"
    assert report["orders"] == [0, 2, 4] and len(report["shapley"]["mean"]) == 6
    assert abs(report["shapley"]["efficiency_gap"]) < 1e-8
    assert report["game"]["transcript_source"] == "greedy"
    assert len(report["interactions"]["mean"]) == 3 and len(report["pairs"]) == 15
    for name in ("shapley.png", "strength.png"):
        assert (out / name).stat().st_size > 1000


def test_chorus_analyze_interactions_samples_past_exact_max(tiny_asr_run, wav, tmp_path):
    out = tmp_path / "sampled"
    assert chorus(["analyze", "interactions", "--workdir", str(tiny_asr_run), "--audio", wav,
                   "--out", str(out), "--players", "5", "--axis", "frequency",
                   "--exact-max", "3", "--samples", "3", "--orders", "0,1",
                   "--reference", "hello there", "--quiet"]) == 0
    report = json.loads((out / "interactions.json").read_text())
    assert report["method"] == "sampled" and report["game"]["transcript"] == "hello there"
    assert all(s > 0 for s in report["shapley"]["stderr"])
    assert report["game"]["players"]["axis"] == "frequency"


def test_chorus_analyze_interactions_on_text_draws_the_word_tree(tiny_tts_stack, tmp_path):
    out = tmp_path / "text"
    assert chorus(["analyze", "interactions", "--workdir", tiny_tts_stack["tts"],
                   "--codec", tiny_tts_stack["codec"], "--text", "please turn on the light",
                   "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "interactions.json").read_text())
    assert report["players"] == ["please", "turn", "on", "the", "light"]
    assert report["tree"] is not None and (out / "tree.png").stat().st_size > 1000
    assert all(w in (out / "tree.txt").read_text() for w in report["players"])


@pytest.mark.parametrize("args,message", [
    (["--audio", "/no/such.wav"], "/no/such.wav"),
    (["--audio", "WAV", "--players", "1"], "--players"),
    (["--audio", "WAV", "--baseline", "noise"], "baseline"),
])
def test_chorus_analyze_names_bad_input(tiny_asr_run, wav, tmp_path, capsys, args, message):
    args = [wav if a == "WAV" else a for a in args]
    assert chorus(["analyze", "interactions", "--workdir", str(tiny_asr_run), "--out",
                   str(tmp_path / "x"), "--quiet", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_the_experiment_answers_both_questions_and_resumes(tiny_asr_run, tiny_asr_corpus,
                                                           tmp_path, capsys):
    out = tmp_path / "experiment"
    argv = ["analyze", "experiment", "--asr", str(tiny_asr_run), "--robust", str(tiny_asr_run),
            "--data", tiny_asr_corpus, "--out", str(out), "--utterances", "2", "--players",
            "4", "--steps", "2", "--epsilon", "0.5"]
    assert chorus(argv) == 0
    result = json.loads((out / "results.json").read_text())
    models = result["summary"]["models"]
    assert set(models) == {"normal", "robust"} and models["normal"]["utterances"] == 2
    for m in models.values():
        np.testing.assert_allclose(np.sum(m["clean"]["relative_mean"]), 1.0, atol=1e-9)
        # the attack lowered the reference's log-probability
        assert m["attacked"]["value_full"][0] < m["clean"]["value_full"][0]
    assert "adversarial_training_moves_to_low_order" in result["answers"]
    assert "| question |" in (out / "results.md").read_text()
    for name in result["figures"]:
        assert os.path.getsize(name) > 1000
    records = (out / "records.jsonl").read_text().splitlines()
    assert len(records) == 4
    mtime = os.path.getmtime(out / "records.jsonl")
    assert chorus(argv) == 0  # resumes: every record is there, none is recomputed
    assert os.path.getmtime(out / "records.jsonl") == mtime
    capsys.readouterr()
    assert chorus([*argv[:-2], "--epsilon", "0.25"]) == 2
    assert "records of other settings" in capsys.readouterr().err
