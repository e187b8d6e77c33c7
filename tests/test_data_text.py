"""Sentence grammar, compositional split, personas, text normalization."""

import re

import numpy as np
import pytest

from chorus.audio.text import normalize_text, number_to_words
from data_pipelines import personas
from data_pipelines.text_generator import (
    CATEGORIES,
    COMPOSITIONAL_PAIRS,
    SentenceGenerator,
    TextGeneratorConfig,
)


@pytest.fixture(scope="module")
def gen():
    return SentenceGenerator(TextGeneratorConfig(held_out_fraction=0.2))


def _sample(gen, split, n, seed):
    rng = np.random.default_rng(seed)
    return [gen.sample_for_split(rng, split) for _ in range(n)]


def test_generator_is_seeded(gen):
    a = [s.text for s in _sample(gen, "train", 30, seed=1)]
    b = [s.text for s in _sample(gen, "train", 30, seed=1)]
    c = [s.text for s in _sample(gen, "train", 30, seed=2)]
    assert a == b
    assert a != c


def test_sentences_cover_all_categories_and_are_clean_ascii(gen):
    sentences = [gen.sample(np.random.default_rng(i)) for i in range(400)]
    assert {s.category for s in sentences} == set(CATEGORIES)
    for s in sentences:
        assert s.text.isascii() and s.text[0].isupper() and "{" not in s.text
        assert s.text[-1] in ".?"


def test_compositional_split_holds_out_pairs_of_known_words(gen):
    train = _sample(gen, "train", 3000, seed=3)
    comp = _sample(gen, "test_compositional", 200, seed=4)
    assert not any(gen.is_held_out(p) for s in train for p in s.pairs)
    assert all(any(gen.is_held_out(p) for p in s.pairs) for s in comp)
    # Only the combination is new: every word of a compositional sentence occurs in training.
    train_words = {w for s in train for w in re.findall(r"[a-z]+", s.text.lower())}
    comp_words = {w for s in comp for w in re.findall(r"[a-z]+", s.text.lower())}
    assert comp_words <= train_words, comp_words - train_words
    # Structural guarantee: every word of a held-out pair has a partner that is not held out.
    for type_a, a, type_b, b in gen.held_out_pairs:
        assert (type_a, type_b) in COMPOSITIONAL_PAIRS
        partners_b = gen._words(type_b)
        assert any(not gen.is_held_out((type_a, a, type_b, x)) for x in partners_b)
        partners_a = gen._words(type_a)
        assert any(not gen.is_held_out((type_a, x, type_b, b)) for x in partners_a)
    assert len(gen.held_out_pairs) > 50


def test_train_validation_test_are_disjoint_by_text(gen):
    texts = {split: {s.text for s in _sample(gen, split, 150, seed=5)}
             for split in ("train", "validation", "test")}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]


def test_vocabulary_knob_limits_words():
    small = SentenceGenerator(TextGeneratorConfig(words_per_list=3))
    words = {w for s in _sample(small, "train", 300, seed=6)
             for w in re.findall(r"[a-z]+", s.text.lower())}
    assert words <= small.vocabulary()
    assert len(small.vocabulary()) < len(SentenceGenerator().vocabulary())
    names = {w.lower() for w in small.lexicon.names}
    assert names == {"maya", "omar", "lena"}


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="held_out_fraction"):
        TextGeneratorConfig(held_out_fraction=1.5)
    with pytest.raises(ValueError, match="category_weights"):
        TextGeneratorConfig(category_weights={"poems": 1.0})


@pytest.mark.parametrize("style", sorted(personas.ANSWERS))
def test_persona_answers_state_their_facts(style):
    persona = personas.Persona(name="Maya", age=34, home="Lisbon", job="engineer",
                               likes=("jazz", "tea"), style=style)
    other = personas.Persona(name="Omar", age=61, home="Oslo", job="baker",
                             likes=("chess", "opera"), style=style)
    card = persona.card()
    for kind in personas.QUESTION_KINDS:
        reply = personas.answer(persona, kind)
        assert personas.answer_states_fact(persona, kind, reply), (kind, reply)
        assert not personas.answer_states_fact(other, kind, reply), (kind, reply)
        assert normalize_text(persona.fact(kind)) in normalize_text(card)
    assert "an engineer" in personas.answer(persona, "job") or style == "terse"


def test_sampled_exchanges_are_consistent():
    rng = np.random.default_rng(7)
    for _ in range(100):
        ex = personas.sample_exchange(rng)
        assert ex.question.endswith("?") and ex.question.isascii()
        assert personas.answer_states_fact(ex.persona, ex.kind, ex.answer)


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(15) == "fifteen"
    assert number_to_words(40) == "forty"
    assert number_to_words(345) == "three hundred forty five"
    assert number_to_words(2024) == "two thousand twenty four"
    assert number_to_words(1_000_001) == "one million one"
    with pytest.raises(ValueError):
        number_to_words(-1)


@pytest.mark.parametrize("raw, expected", [
    ("At 7:45, Dr. O'Brien said: 'GO!'", "at seven forty five dr obrien said go"),
    ("DON'T  stop\tnow", "dont stop now"),
    ("Room 12-B", "room twelve b"),
    ("1234567890123", "one two three four five six seven eight nine zero one two three"),
    ("   ", ""),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected
    assert normalize_text(normalize_text(raw)) == normalize_text(raw)
