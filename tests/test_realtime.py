"""experiments/realtime/regime.py: the dialogue regime's layout and its persona-record filter."""

import numpy as np
import pytest

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
                             [s("<assistant>")], _encode("I live in Oslo."), [s("<tts_start>")]])
    np.testing.assert_array_equal(t, expect)
    assert t[stream.prompt_length - 1] == s("<assistant>")
    np.testing.assert_array_equal(stream.targets[stream.loss_mask > 0],
                                  np.append(_encode("I live in Oslo."), s("<tts_start>")))
    ref = regime.reference(ex)
    assert ref["reference_text"] == "I live in Oslo." and ref["persona"] == "name: Ada"
    assert ref["question"] == "where do you live"
    np.testing.assert_array_equal(ref["reference_ids"], _encode("I live in Oslo."))


def test_accepts_only_dialogue_turns():
    regime = DialogueRegime()
    assert regime.accepts({"persona": "name: Ada"}) and regime.accepts({"persona": b"x"})
    assert not regime.accepts({"persona": ""}) and not regime.accepts({"text": "hi"})
    card = FieldMap(persona="card")  # a dataset whose card field is named otherwise
    assert regime.accepts({"card": "name: Bo"}, card)
    assert not regime.accepts({"persona": "name: Ada"}, card)
    assert not regime.accepts({"persona": "name: Ada"}, FieldMap(persona=None))


def _turn(question="Hi! Where do you live?", id="d7"):
    record = Record(wave=np.zeros(1600, np.float32), text=question, speaker="3", id=id,
                    instruction="", tagged_text="",
                    persona="name: Ada. age: 34. home: Oslo. job: baker. likes: chess and "
                            "rain. style: formal.", answer="I reside in Oslo.")
    return record


def _inputs(record, rng):
    return ExampleInputs(record=record, features=np.zeros((37, 128), np.float32), cached={},
                         encode=_encode, layout=LAYOUT, rng=rng)


def _card_of(stream):
    s, t = LAYOUT.special, stream.tokens
    i = int(np.flatnonzero(t == s("<persona>"))[0]) + 1
    j = int(np.flatnonzero(t == s("<user>"))[0])
    return "".join(chr(x) for x in t[i:j])


def test_fresh_cards_come_from_the_training_names_with_the_answer_rederived():
    from data_pipelines.personas import split_lexicon
    from experiments.realtime.checker import check_answer, parse_card

    train, held = split_lexicon(every=4)
    regime = DialogueRegime(fresh_cards=1.0)
    check_regime(regime)
    rng = np.random.default_rng(0)
    cards = set()
    for _ in range(50):
        card, reply = regime.card_and_answer(_inputs(_turn(), rng))
        persona = parse_card(card)
        assert persona.name in train.names and persona.home in train.places
        assert check_answer(card, "Where do you live?", reply).consistent
        cards.add(card)
    assert len(cards) > 40  # a new card nearly every time
    # the stream holds the fresh card and its answer
    stream = regime.stream(_inputs(_turn(), np.random.default_rng(3)))
    card, reply = regime.card_and_answer(_inputs(_turn(), np.random.default_rng(3)))
    assert _card_of(stream) == "".join(chr(ord(c) % 128) for c in card)
    # evaluation (no rng) and fresh_cards=0 keep the record's own card
    record = _turn()
    assert regime.card_and_answer(_inputs(record, None)) == (record.persona, record.answer)
    assert DialogueRegime().card_and_answer(_inputs(record, rng)) == (record.persona,
                                                                     record.answer)


def test_held_out_cards_are_seeded_by_the_record_and_name_only_held_out_people():
    from data_pipelines.personas import split_lexicon
    from experiments.realtime.checker import check_answer, parse_card

    _, held = split_lexicon(every=4)
    regime = DialogueRegime(cards="held_out")
    seen = set()
    for k in range(30):
        ex = _inputs(_turn(id=f"d{k}"), None)
        card, reply = regime.card_and_answer(ex)
        assert regime.card_and_answer(ex) == (card, reply)  # deterministic
        persona = parse_card(card)
        assert persona.name in held.names and persona.home in held.places
        assert check_answer(card, "Where do you live?", reply).consistent
        ref = regime.reference(ex)
        assert (ref["persona"], ref["reference_text"]) == (card, reply)
        seen.add(card)
    assert len(seen) == 30
    train_card, _ = DialogueRegime(cards="train").card_and_answer(_inputs(_turn(), None))
    assert parse_card(train_card).name not in held.names


def test_a_turn_whose_question_is_not_a_persona_question_is_skipped_when_carded_afresh():
    from data_pipelines.records import Skip

    got = DialogueRegime(cards="held_out").stream(_inputs(_turn("Turn off the lights."), None))
    assert isinstance(got, Skip) and got.reason == "unknown_question"


def test_regime_settings_are_checked():
    with pytest.raises(ValueError, match="fresh_cards"):
        DialogueRegime(fresh_cards=1.5)
    with pytest.raises(ValueError, match="cards"):
        DialogueRegime(cards="mine")
    with pytest.raises(ValueError, match="every"):
        DialogueRegime(held_out_every=1)
    with pytest.raises(ValueError, match="out_of_scope"):
        DialogueRegime(out_of_scope=2.0)
    with pytest.raises(ValueError, match="expected out_of_scope > 0"):
        DialogueRegime(scope="out_of_scope")


def _utterance(text="Turn off the lights in the kitchen.", id="u3"):
    return Record(wave=np.zeros(1600, np.float32), text=text, speaker="3", id=id,
                  instruction="", tagged_text="", persona="", answer="")


def test_a_share_of_the_other_utterances_are_out_of_scope_requests_by_record_id():
    regime = DialogueRegime(out_of_scope=0.25)
    raws = [{"id": f"u{i}".encode(), "persona": b"", "text": b"x"} for i in range(2000)]
    taken = [regime.accepts(r) for r in raws]
    assert 0.2 < np.mean(taken) < 0.3  # by the id's hash: the same records every epoch
    assert taken == [regime.accepts(r) for r in raws]
    assert regime.accepts({"id": b"d1", "persona": b"name: Ada"})  # dialogue turns stay
    assert regime.required_texts == ()  # the other utterances have no card or answer
    assert DialogueRegime().required_texts == ("persona", "answer")
    assert not any(DialogueRegime().accepts(r) for r in raws)
    only = DialogueRegime(out_of_scope=1.0, scope="out_of_scope")
    assert all(only.accepts(r) for r in raws)
    assert not only.accepts({"id": b"d1", "persona": b"name: Ada"})


def test_an_out_of_scope_request_is_declined_in_the_style_of_a_fresh_card():
    from data_pipelines.personas import DECLINES, split_lexicon
    from data_pipelines.records import Skip
    from experiments.realtime.checker import check_answer, parse_card

    train_lex, held_lex = split_lexicon()
    regime = DialogueRegime(out_of_scope=0.1, fresh_cards=1.0)
    rng = np.random.default_rng(0)
    cards = set()
    for _ in range(30):
        card, reply = regime.card_and_answer(_inputs(_utterance(), rng))
        persona = parse_card(card)
        assert reply == DECLINES[persona.style] and persona.name in train_lex.names
        assert check_answer(card, "Turn off the lights in the kitchen.", reply).consistent
        cards.add(card)
    assert len(cards) > 20  # drawn anew in training
    stream = regime.stream(_inputs(_utterance(), rng))
    s = LAYOUT.special
    assert stream.tokens[-1] == s("<tts_start>") and s("<user>") in stream.tokens
    held = DialogueRegime(out_of_scope=0.1, cards="held_out")
    card, _ = held.card_and_answer(_inputs(_utterance(), None))
    assert parse_card(card).name in held_lex.names
    assert held.card_and_answer(_inputs(_utterance(), None))[0] == card  # seeded by the id
    # an utterance without a card that asks a persona question is not out of scope
    got = regime.stream(_inputs(_utterance("Tell me, where do you live?"), rng))
    assert isinstance(got, Skip) and got.reason == "ambiguous_request"
