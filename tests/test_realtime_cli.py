"""`chorus chat` (experiments/realtime/cli.py): the persona card's checks, and a tiny TTS run
(a backbone that speaks <tts_start> codes) through the whole chat."""

import json

import numpy as np
import pytest

from chorus.audio.io import write_wav
from chorus.cli import main as chorus
from experiments.realtime.persona import PersonaCard, PersonaError

CARD = {"name": "Ada", "age": 34, "home": "Oslo", "job": "baker", "likes": ["chess", "rain"],
        "style": "terse", "voice": "voice0"}


def _card(tmp_path, **changes):
    data = {**CARD, **changes}
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    path = tmp_path / "card.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_the_card_text_is_the_corpus_form(tmp_path):
    card = PersonaCard.load(_card(tmp_path))
    assert card.text() == ("name: Ada. age: 34. home: Oslo. job: baker. likes: chess and rain. "
                           "style: terse.")
    assert card.likes == ("chess", "rain") and card.voice == "voice0"


@pytest.mark.parametrize("changes,message", [
    ({"age": "old"}, r"card.json: persona.age: expected an integer in 1..120, got 'old'$"),
    ({"age": 0}, r"persona.age: expected an integer in 1..120, got 0$"),
    ({"likes": ["chess"]}, r"persona.likes: expected a list of 2 non-empty strings, got "),
    ({"style": "grumpy"}, r"persona.style: expected one of \["),
    ({"name": ""}, r"persona.name: expected a non-empty string, got ''$"),
    ({"voice": None}, r"card.json: expected fields \[.*\], got missing field\(s\) voice$"),
    ({"mood": "happy"}, r"got unknown field\(s\) mood$"),
])
def test_bad_cards_are_one_line_errors_naming_the_field(tmp_path, changes, message):
    with pytest.raises(PersonaError, match=message):
        PersonaCard.load(_card(tmp_path, **changes))


def test_cli_rejects_a_bad_card_before_loading_a_run(tmp_path, capsys):
    wav = tmp_path / "q.wav"
    write_wav(str(wav), np.zeros(1600, np.float32))
    rc = chorus(["chat", "--workdir", str(tmp_path / "none"), "--persona",
                 _card(tmp_path, age=200), "--out", str(tmp_path / "out"), str(wav)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert err.endswith("persona.age: expected an integer in 1..120, got 200")
    (tmp_path / "bad.json").write_text("{")
    assert chorus(["chat", "--workdir", "x", "--persona", str(tmp_path / "bad.json"), "--out",
                   str(tmp_path / "o"), str(wav)]) == 2
    assert "bad.json: expected JSON, got a parse error at line 1" in capsys.readouterr().err


@pytest.mark.slow
def test_chat_end_to_end_with_a_tiny_tts_run(tiny_tts_stack, tmp_path, capsys):
    from chorus.codec.pipeline import Codec
    from data_pipelines.synthesis import synthesize

    voice = sorted(Codec.load(tiny_tts_stack["codec"], ("speaker",)).voices)[0]
    questions = []
    for k, text in enumerate(["Where do you live?", "What do you do for a living?"]):
        wave, _ = synthesize(text)
        questions.append(str(tmp_path / f"q{k}.wav"))
        write_wav(questions[-1], wave)
    out = tmp_path / "out"
    rc = chorus(["chat", "--workdir", tiny_tts_stack["tts"], "--persona",
                 _card(tmp_path, voice=voice), "--out", str(out), "--max-codes", "30",
                 "--max-text-tokens", "4", "--set", "audio.chunk_size=4", *questions])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "latencies.json").read_text())
    assert [t["turn"] for t in report["turns"]] == [0, 1]
    for k, turn in enumerate(report["turns"]):
        assert 0 < turn["first_audio_ms"] <= turn["answer_ms"]
        assert (out / f"turn_{k}.txt").exists() and (out / f"turn_{k}.wav").stat().st_size > 44
        assert 1 <= turn["codes"] <= 30 and turn["answer_seconds"] == turn["codes"] * 0.04
