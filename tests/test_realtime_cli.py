"""`chorus chat` (experiments/realtime/cli.py): the persona card's checks, before any run is
loaded. The whole chat on a spoken realtime run: tests/test_realtime_spoken.py."""

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
