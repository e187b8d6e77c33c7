"""experiments/realtime/regime.py: the dialogue regime's layout and its persona-record filter."""

import numpy as np

from chorus.vocab import VocabLayout, num_audio_placeholders
from data_pipelines.records import Record
from data_pipelines.regime import ExampleInputs, check_regime
from data_pipelines.sources import FieldMap
from experiments.realtime import DialogueRegime

LAYOUT = VocabLayout(text_size=128, num_audio_codes=8)


def _encode(text: str) -> np.ndarray:
    return np.array([ord(c) % 128 for c in text], np.int32)


def test_stream_layout_and_reference():
    record = Record(wave=np.zeros(1600, np.float32), text="where do you live", speaker="3",
                    id="d1", instruction="", tagged_text="", persona="name: Ada",
                    answer="I live in Oslo.")
    ex = ExampleInputs(record=record, features=np.zeros((37, 128), np.float32), cached={},
                       encode=_encode, layout=LAYOUT, rng=None)
    regime = DialogueRegime()
    check_regime(regime)
    stream = regime.stream(ex)
    s, t = LAYOUT.special, stream.tokens
    n = num_audio_placeholders(37)
    expect = np.concatenate([[s("<chat>"), s("<persona>")], _encode("name: Ada"),
                             [s("<user>")], [LAYOUT.audio_placeholder_id] * n,
                             [s("<assistant>")], _encode("I live in Oslo."), [LAYOUT.eos_id]])
    np.testing.assert_array_equal(t, expect)
    assert t[stream.prompt_length - 1] == s("<assistant>")
    np.testing.assert_array_equal(stream.targets[stream.loss_mask > 0],
                                  np.append(_encode("I live in Oslo."), LAYOUT.eos_id))
    ref = regime.reference(ex)
    assert ref["reference_text"] == "I live in Oslo." and ref["persona"] == "name: Ada"
    np.testing.assert_array_equal(ref["reference_ids"], _encode("I live in Oslo."))


def test_accepts_only_dialogue_turns():
    regime = DialogueRegime()
    assert regime.accepts({"persona": "name: Ada"}) and regime.accepts({"persona": b"x"})
    assert not regime.accepts({"persona": ""}) and not regime.accepts({"text": "hi"})
    card = FieldMap(persona="card")  # a dataset whose card field is named otherwise
    assert regime.accepts({"card": "name: Bo"}, card)
    assert not regime.accepts({"persona": "name: Ada"}, card)
    assert not regime.accepts({"persona": "name: Ada"}, FieldMap(persona=None))
