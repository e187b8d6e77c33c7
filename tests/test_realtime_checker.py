"""experiments/realtime/checker.py and rewards.py: the exact persona checker against the ground
truth of how answers are made (data_pipelines.personas, the judge's perturbations), and the
reward components built on it."""

import dataclasses
import json

import numpy as np
import pytest

from chorus.config import load_config
from chorus.rl.rewards import RewardMix, RewardMixConfig
from chorus.rl.task import Completion
from chorus.vocab import VocabLayout
from data_pipelines.personas import QUESTIONS, Persona, answer, sample_exchange
from experiments.judge.labels import KINDS, make_example
from experiments.realtime import rewards as _rewards  # noqa: F401  (registers persona_*)
from experiments.realtime.checker import CardError, check_answer, fill, parse_card, question_kind
from experiments.realtime.rewards import rule_scores

PERSONA = Persona("Ada", 24, "Riga", "engineer", ("chess", "tea"), "formal")


def test_the_card_parses_back_to_its_persona():
    rng = np.random.default_rng(0)
    for _ in range(200):
        persona = sample_exchange(rng).persona
        assert parse_card(persona.card()) == persona
    with pytest.raises(CardError, match="persona card: expected 'name: .."):
        parse_card("name: Ada. age: old.")


def test_every_question_wording_is_read_as_its_kind_with_or_without_an_opener():
    for kind, wordings in QUESTIONS.items():
        for q in wordings:
            assert question_kind(q) == kind
            assert question_kind(f"Excuse me, {q[0].lower()}{q[1:]}") == kind
    with pytest.raises(ValueError, match="one of the persona questions"):
        question_kind("What is the capital of France?")


def test_the_corpus_answers_pass_every_check():
    rng = np.random.default_rng(1)
    for _ in range(1000):
        ex = sample_exchange(rng)
        check = check_answer(ex.persona.card(), ex.question, ex.answer)
        assert check.kind == ex.kind and check.consistent, (ex, check)


@pytest.mark.parametrize("kind", KINDS)
def test_each_perturbation_fails_exactly_its_checks(kind):
    expected = {"consistent": (True, True, True), "wrong_fact": (False, True, True),
                "wrong_style": (True, False, True), "out_of_character": (False, False, False)}
    rng = np.random.default_rng(2)
    for _ in range(300):
        ex = make_example(rng, kind)
        c = check_answer(ex.persona.card(), ex.question, ex.answer)
        if kind == "refusal":  # "That is private." fills a terse template: not the point
            assert not c.fact and not c.in_character and c.refusal and not c.consistent
        else:
            assert (c.fact, c.style, c.in_character) == expected[kind], (ex, c)
        assert c.consistent == (kind == "consistent")


def test_a_templated_fact_must_be_the_whole_slot():
    # "twenty four" holds the word "twenty": a substring check would pass an age of 20
    young = dataclasses.replace(PERSONA, age=20)
    reply = answer(PERSONA, "age")  # "I am 24 years old."
    assert not check_answer(young, "How old are you?", reply).fact
    assert check_answer(PERSONA, "How old are you?", reply).fact
    assert fill("age", reply) == ("formal", "twenty four")
    # a reply in no template is checked for the fact anywhere in it
    free = check_answer(PERSONA, "Where do you live?", "Well, Riga is where I live.")
    assert free.fact and not free.style and free.in_character


def _completions(texts, layout, end=True):
    stop = [layout.special("<tts_start>")] if end else []
    return [Completion(np.array([1, 2, *stop], np.int32), t, np.zeros(0, np.int32))
            for t in texts]


def test_persona_rewards_are_the_checker_per_completion():
    config = load_config("cpu-tiny", [])
    layout = VocabLayout.from_model_config(config.model)
    card = PERSONA.card()
    refs = [json.dumps({"persona": card, "question": "Where do you live?"})] * 3
    texts = ["I reside in Riga.", "I reside in Oslo.", "Oh, I live in Riga, and I love it!"]
    mix = RewardMix(RewardMixConfig.from_mapping(
        {"persona_fact": 1.0, "persona_consistent": 1.0, "persona_rules": 1.0}), config)
    got = mix(refs, _completions(texts, layout), references=refs).components
    np.testing.assert_array_equal(got["persona_fact"], [1, 0, 1])
    np.testing.assert_array_equal(got["persona_consistent"], [1, 0, 0])  # the last: cheerful
    np.testing.assert_array_equal(got["persona_rules"], [1, 1, 1])
    with pytest.raises(ValueError, match="persona_fact.*references"):
        mix(refs, _completions(texts, layout), references=None)


def test_judge_agreement_is_verdict_against_checker_per_answer():
    from experiments.realtime.rewards import JudgeAgreement

    config = load_config("cpu-tiny", [])
    layout = VocabLayout.from_model_config(config.model)
    refs = [json.dumps({"persona": PERSONA.card(), "question": "Where do you live?"})] * 4
    # consistent, wrong fact, consistent, wrong style
    texts = ["I reside in Riga.", "I reside in Oslo.", "I reside in Riga.",
             "Oh, I live in Riga, and I love it!"]
    seen = {}

    def judge(prompts, completions, *, references=None):
        seen["texts"], seen["refs"] = [c.text for c in completions], references
        return np.array([0.9, 0.7, 0.2, 0.5])  # yes, yes (fooled), no (too strict), no

    got = JudgeAgreement(judge)(refs, _completions(texts, layout), references=refs)
    np.testing.assert_array_equal(got, [1, 0, 0, 1])
    assert seen == {"texts": texts, "refs": refs}
    with pytest.raises(Exception, match="rewards.judge_agreement.run"):
        RewardMix(RewardMixConfig.from_mapping({"judge_agreement": {"weight": 0}}), config)


def test_interaction_rules_score_length_repetition_and_a_clean_end():
    end = 7
    assert rule_scores("I reside in Riga.", np.array([1, end]), end, 16) == (1, 1, 1)
    assert rule_scores("", np.array([end]), end, 16) == (0, 1, 1)  # nothing said
    assert rule_scores("word " * 17, np.array([1, end]), end, 16)[0] == 0  # too long
    assert rule_scores("in Riga in Riga", np.array([1, end]), end, 16)[1] == 0  # repeats
    assert rule_scores("I reside in Riga.", np.array([1, 2]), end, 16)[2] == 0  # hit the cap
    config = load_config("cpu-tiny", [])
    with pytest.raises(Exception, match="rewards.persona_rules.max_words"):
        RewardMix(RewardMixConfig.from_mapping({"persona_rules": {"weight": 1,
                                                                  "max_words": 0}}), config)


def test_the_persona_table_counts_each_check_over_the_turns():
    from experiments.realtime.evaluate import persona_table, report_markdown

    rng = np.random.default_rng(4)
    exchanges = [sample_exchange(rng) for _ in range(8)]
    examples = [{"persona": e.persona.card(), "question": e.question, "reference_text": e.answer}
                for e in exchanges]
    perfect = persona_table([e.answer for e in exchanges], examples)
    assert perfect["turns"] == 8
    assert all(perfect[k] == 1.0 for k in ("fact", "style", "in_character", "consistent",
                                           "exact"))
    wrong = [make_example(rng, "out_of_character").answer for _ in exchanges[:4]]
    half = persona_table([*wrong, *(e.answer for e in exchanges[4:])], examples)
    assert half["in_character"] == half["consistent"] == half["exact"] == 0.5
    kinds = {e.kind for e in exchanges[:4]} - {e.kind for e in exchanges[4:]}
    assert all(half["fact_by_kind"][k] == 0 for k in kinds)
    md = report_markdown({"test": half})
    assert "| test | 8 | " in md and "0.500" in md


def test_an_out_of_scope_request_is_checked_on_its_decline():
    from data_pipelines.personas import ANSWERS, DECLINES, OUT_OF_SCOPE, decline
    from experiments.realtime.checker import request_kind

    assert set(DECLINES) == set(ANSWERS)  # every style declines in its own way
    request = "Turn off the lights in the kitchen."
    assert request_kind(request) == OUT_OF_SCOPE and request_kind("How old are you?") == "age"
    for style in ANSWERS:
        persona = dataclasses.replace(PERSONA, style=style)
        check = check_answer(persona, request, decline(persona))
        assert check.kind == OUT_OF_SCOPE and check.consistent  # and neither AI nor refusal
        other = next(s for s in ANSWERS if s != style)
        wrong_style = check_answer(persona, request, DECLINES[other])
        assert wrong_style.fact and not wrong_style.style and not wrong_style.consistent
    answered = check_answer(PERSONA, request, answer(PERSONA, "home"))
    assert not answered.fact and not answered.consistent  # a fact where a decline was due
    refused = check_answer(PERSONA, request, "Sorry, I cannot share that.")
    assert not refused.in_character and not refused.consistent
    # a decline where the card answers the question is not its fact
    assert not check_answer(PERSONA, "Where do you live?", decline(PERSONA)).fact
