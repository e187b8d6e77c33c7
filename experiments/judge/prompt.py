"""The judge's token layout, built one way for training, scoring and evaluation.

    pointwise  <judge> <rubric> rubric <persona> card <user> question <assistant> answer
               <rationale> | rationale ... <verdict> <yes>|<no> <eos>
    pairwise   <judge> <rubric> rubric <persona> card <user> question
               <choice_a> answer a <choice_b> answer b
               <rationale> | rationale ... <verdict> <choice_a>|<choice_b> <eos>

Everything after `<rationale>` is supervised (loss_mask). Without a rationale
(experiment.rationale=false) the section is empty: `<rationale> <verdict> verdict <eos>`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chorus.vocab import VocabLayout
from data_pipelines.streams import Stream, assemble, ids
from experiments.judge.labels import RUBRIC, JudgeExample, PairExample

Encode = Callable[[str], np.ndarray]
VERDICTS = {"pointwise": ("<yes>", "<no>"), "pairwise": ("<choice_a>", "<choice_b>")}


def _context(layout: VocabLayout, encode: Encode, card: str, question: str) -> list:
    s = layout.special
    return [ids(s("<judge>"), s("<rubric>")), encode(RUBRIC), ids(s("<persona>")), encode(card),
            ids(s("<user>")), encode(question)]


def judge_prompt(layout: VocabLayout, encode: Encode, card: str, question: str,
                 answer: str) -> np.ndarray:
    """The pointwise prompt, up to and including <rationale>."""
    s = layout.special
    return np.concatenate([*_context(layout, encode, card, question), ids(s("<assistant>")),
                           encode(answer), ids(s("<rationale>"))]).astype(np.int32)


def pair_prompt(layout: VocabLayout, encode: Encode, card: str, question: str, answer_a: str,
                answer_b: str) -> np.ndarray:
    """The pairwise prompt, up to and including <rationale>."""
    s = layout.special
    return np.concatenate([*_context(layout, encode, card, question), ids(s("<choice_a>")),
                           encode(answer_a), ids(s("<choice_b>")), encode(answer_b),
                           ids(s("<rationale>"))]).astype(np.int32)


def _target(layout: VocabLayout, encode: Encode, rationale: str | None, verdict: str) -> list:
    s = layout.special
    parts = [] if rationale is None else [encode(rationale)]
    return [*parts, ids(s("<verdict>"), s(verdict), layout.eos_id)]


def example_stream(layout: VocabLayout, encode: Encode, ex: JudgeExample,
                   rationale: bool) -> Stream:
    prompt = judge_prompt(layout, encode, ex.persona.card(), ex.question, ex.answer)
    verdict = "<yes>" if ex.label else "<no>"
    target = _target(layout, encode, ex.rationale if rationale else None, verdict)
    return assemble([(prompt, False), *((t, True) for t in target)], layout.pad_id)


def pair_stream(layout: VocabLayout, encode: Encode, ex: PairExample, rationale: bool) -> Stream:
    prompt = pair_prompt(layout, encode, ex.persona.card(), ex.question, ex.answer_a,
                         ex.answer_b)
    verdict = "<choice_a>" if ex.better == "a" else "<choice_b>"
    target = _target(layout, encode, ex.rationale if rationale else None, verdict)
    return assemble([(prompt, False), *((t, True) for t in target)], layout.pad_id)
