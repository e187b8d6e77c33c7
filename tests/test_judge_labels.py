"""Judge labels are correct by construction; held-out personas and types stay held out."""

import dataclasses

import numpy as np
import pytest

from chorus.config import ConfigError, load_config
from data_pipelines.lexicon import DEFAULT_LEXICON
from data_pipelines.personas import QUESTION_KINDS, answer_states_fact, split_lexicon
from experiments.judge.labels import (
    CONSISTENT,
    KINDS,
    PERTURBATIONS,
    answer_style,
    make_example,
    make_pair,
    perturb,
)
from experiments.judge.settings import JudgeSettings, judge_settings

N = 200


def examples(kind, seed=0, lexicon=DEFAULT_LEXICON, n=N):
    rng = np.random.default_rng(seed)
    return [make_example(rng, kind, lexicon) for _ in range(n)]


def test_consistent_answers_state_the_fact_in_the_card_style():
    for ex in examples(CONSISTENT):
        assert ex.label
        assert answer_states_fact(ex.persona, ex.kind, ex.answer)
        assert answer_style(ex.persona, ex.kind, ex.answer) == ex.persona.style
        assert ex.rationale.startswith(f"checked {ex.kind}: ")
        assert ex.rationale.endswith(f"the answer says {ex.persona.fact(ex.kind)}.")


def test_wrong_fact_contradicts_the_card_and_the_rationale_names_both_values():
    for ex in examples("wrong_fact", seed=1):
        assert not ex.label
        assert not answer_states_fact(ex.persona, ex.kind, ex.answer), ex
        said = ex.rationale.rsplit("the answer says ", 1)[1][:-1]
        assert said != ex.persona.fact(ex.kind)
        assert said.lower() in ex.answer.lower()  # the rationale quotes what the answer states
        assert f" {ex.persona.fact(ex.kind)};" in ex.rationale


def test_wrong_style_keeps_the_fact_in_another_style():
    for ex in examples("wrong_style", seed=2):
        assert not ex.label
        assert answer_states_fact(ex.persona, ex.kind, ex.answer)
        style = answer_style(ex.persona, ex.kind, ex.answer)
        assert style is not None and style != ex.persona.style
        assert ex.rationale == (f"checked style: the persona is {ex.persona.style}; "
                                f"the answer is {style}.")


@pytest.mark.parametrize("kind", ["out_of_character", "refusal"])
def test_out_of_character_and_refusal_do_not_answer(kind):
    for ex in examples(kind, seed=3):
        assert not ex.label
        assert not answer_states_fact(ex.persona, ex.kind, ex.answer)
        assert answer_style(ex.persona, ex.kind, ex.answer) is None
    assert "refuses" in examples("refusal", n=1)[0].rationale
    assert "as an AI" in examples("out_of_character", n=1)[0].rationale


def test_every_kind_and_question_kind_is_drawn():
    for kind in KINDS:
        assert {ex.kind for ex in examples(kind, n=100)} == set(QUESTION_KINDS)


def test_examples_are_a_pure_function_of_the_rng():
    assert examples("wrong_fact", seed=5, n=20) == examples("wrong_fact", seed=5, n=20)
    assert examples("wrong_fact", seed=5, n=20) != examples("wrong_fact", seed=6, n=20)


def test_pairs_put_the_consistent_answer_in_the_better_slot():
    rng = np.random.default_rng(0)
    slots = set()
    for kind in PERTURBATIONS:
        for _ in range(50):
            p = make_pair(rng, kind, DEFAULT_LEXICON)
            good, bad = ((p.answer_a, p.answer_b) if p.better == "a"
                         else (p.answer_b, p.answer_a))
            assert good != bad
            assert answer_states_fact(p.persona, p.kind, good)
            assert answer_style(p.persona, p.kind, good) == p.persona.style
            assert p.rationale.startswith(f"answer {'b' if p.better == 'a' else 'a'}: ")
            slots.add(p.better)
    assert slots == {"a", "b"}


def test_split_lexicon_holds_every_fourth_name_and_place_out():
    train, held = split_lexicon(DEFAULT_LEXICON, every=4)
    assert held.names == DEFAULT_LEXICON.names[::4] and held.places == DEFAULT_LEXICON.places[::4]
    assert not set(train.names) & set(held.names)
    assert not set(train.places) & set(held.places)
    assert set(train.names) | set(held.names) == set(DEFAULT_LEXICON.names)
    assert train.jobs == held.jobs == DEFAULT_LEXICON.jobs


def test_training_cards_never_hold_held_out_values_and_eval_cards_only_those(tmp_path):
    from data_pipelines.tokenizer import train_tokenizer
    from experiments.judge.experiment import EVAL, TRAIN, JudgeBatches

    tok = train_tokenizer(["name: Maya. home: Riga."], 128, str(tmp_path / "t.model"))
    config = load_config("cpu-tiny", ["train.batch_size=8"])
    settings = JudgeSettings(pairwise_fraction=0.3)
    train, held = split_lexicon(every=settings.held_out_every)
    held_words = set(held.names) | set(held.places)
    seen_types, pair_seen = set(), False
    batches = JudgeBatches(config, settings, tok, TRAIN)
    for step in range(40):
        for row in range(8):
            ex = batches.example(step, row)
            card = ex.persona.card()
            assert ex.persona.name not in held_words and ex.persona.home not in held_words
            words = set(card.replace(".", " ").replace(":", " ").split())
            answers = (ex.answer_a, ex.answer_b) if hasattr(ex, "better") else (ex.answer,)
            for text in answers:  # wrong facts come from the training lexicon too
                words |= set(text.replace(".", " ").replace(",", " ").replace("!", " ").split())
            assert not words & held_words, (card, answers)
            seen_types.add(ex.perturbation)
            pair_seen |= hasattr(ex, "better")
    assert "refusal" not in seen_types  # the held-out type never trains
    assert seen_types == {CONSISTENT, "wrong_fact", "wrong_style", "out_of_character"}
    assert pair_seen
    eval_batches = JudgeBatches(config, settings, tok, EVAL)
    eval_types = set()
    for step in range(40):
        for row in range(8):
            ex = eval_batches.example(step, row)
            assert ex.persona.name in held.names and ex.persona.home in held.places
            eval_types.add(ex.perturbation)
    assert "refusal" in eval_types


def test_perturb_rejects_an_unknown_type():
    ex = examples(CONSISTENT, n=1)[0]
    with pytest.raises(ValueError, match="perturbation: expected one of"):
        perturb(np.random.default_rng(0), ex.persona, ex.kind, ex.question, "rude")


def test_settings_are_validated_naming_the_field():
    with pytest.raises(ConfigError, match="experiment.held_out_perturbations: expected"):
        judge_settings(load_config("cpu-tiny", ["experiment.held_out_perturbations=[rude]"]))
    with pytest.raises(ConfigError, match="at least one perturbation type left"):
        JudgeSettings(held_out_perturbations=PERTURBATIONS)
    with pytest.raises(ConfigError, match="experiment.held_out_every"):
        JudgeSettings(held_out_every=1)
    with pytest.raises(ConfigError, match="experiment.pairwise_fraction"):
        JudgeSettings(pairwise_fraction=1.0)
    with pytest.raises(ConfigError, match=r"experiment: unknown field\(s\) \['nope'\]"):
        judge_settings(load_config("cpu-tiny", ["experiment.nope=1"]))
    s = judge_settings(load_config("cpu-tiny", ["experiment.held_out_perturbations=[wrong_style]",
                                                "experiment.rationale=false"]))
    assert s.held_out_perturbations == ("wrong_style",) and not s.rationale
    assert s.trained_perturbations == ("wrong_fact", "out_of_character", "refusal")
    assert dataclasses.is_dataclass(s)
