"""Judge training labels built from persona facts: consistent answers and perturbed ones.

    train_lex, eval_lex = split_lexicon(DEFAULT_LEXICON, every=4)   # data_pipelines.personas
    ex = make_example(np.random.default_rng(0), "wrong_fact", train_lex)
    ex.answer     # "I reside in Porto."          (the card says home: Riga)
    ex.rationale  # "checked home: the persona lives in Riga; the answer says Porto."
    ex.label      # False

Every label is true by construction: a consistent answer is `personas.answer` (it states the
card's fact in the card's style); a perturbed one changes exactly one thing the rationale
names. Perturbation types:

    wrong_fact        the asked fact replaced by another value of the same kind
    wrong_style       the right fact in another style's template
    out_of_character  the answer speaks as an AI, not as the persona
    refusal           the answer declines a question the card answers

Held-out personas: `split_lexicon` keeps every `every`-th name and place (indices 0, k, 2k, ..)
out of the training lexicon; evaluation cards draw names and places only from those. The
other attributes (age, job, likes, style) are shared: the held-out part is who and where.
A pairwise example puts a consistent and a perturbed answer to one question side by side; its
verdict names the consistent one. Everything is a pure function of the rng passed in.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.lexicon import DEFAULT_LEXICON, Lexicon
from data_pipelines.personas import (
    ANSWERS,
    QUESTION_KINDS,
    QUESTIONS,
    Persona,
    answer,
    sample_persona,
)

CONSISTENT = "consistent"
PERTURBATIONS = ("wrong_fact", "wrong_style", "out_of_character", "refusal")
KINDS = (CONSISTENT, *PERTURBATIONS)

RUBRIC = "The answer must match the card: its facts, its style, in character, and answer."

# How a rationale states the card's fact of each kind.
_STATES = {"name": "is named {}", "age": "is {}", "home": "lives in {}", "job": "works as {}",
           "likes": "likes {}"}
_NOUNS = {"name": "a name", "age": "an age", "home": "a home", "job": "a job", "likes": "hobbies"}
OUT_OF_CHARACTER = ("As an AI, I do not have {noun}.", "I am a language model, not a person.",
                    "As an assistant, I cannot have {noun}.")
REFUSALS = ("I would rather not say.", "Sorry, I cannot share that.", "That is private.")


@dataclasses.dataclass(frozen=True)
class JudgeExample:
    """One judged exchange. label: the answer is true to the card; rationale: what the judge
    checked and found, built from the fact it checked."""

    persona: Persona
    kind: str  # the question kind (personas.QUESTION_KINDS)
    question: str
    answer: str
    perturbation: str  # one of KINDS
    label: bool
    rationale: str


@dataclasses.dataclass(frozen=True)
class PairExample:
    """Two answers to one question, one consistent and one perturbed; `better` is the slot
    ("a" or "b") of the consistent one."""

    persona: Persona
    kind: str
    question: str
    answer_a: str
    answer_b: str
    perturbation: str  # the perturbed answer's type
    better: str
    rationale: str


def consistent_and_perturbed(pair: PairExample) -> tuple[str, str]:
    """The pair's two answers, the consistent one first."""
    return (pair.answer_a, pair.answer_b) if pair.better == "a" else (pair.answer_b,
                                                                      pair.answer_a)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _question(rng: np.random.Generator, kind: str) -> str:
    return _pick(rng, QUESTIONS[kind])


def _wrong_value(rng: np.random.Generator, persona: Persona, kind: str, lexicon: Lexicon):
    """Another value of `kind` than the persona's (likes: one of the two swapped for a like
    the persona lacks, so the pair differs as a set)."""
    if kind == "age":
        return int(_pick(rng, [a for a in range(18, 90) if abs(a - persona.age) >= 3]))
    if kind == "likes":
        others = [w for w in lexicon.likes if w not in persona.likes]
        new = _pick(rng, others)
        return (persona.likes[0], new) if rng.integers(2) else (new, persona.likes[1])
    pool = {"name": lexicon.names, "home": lexicon.places, "job": lexicon.jobs}[kind]
    return _pick(rng, [w for w in pool if w != getattr(persona, kind)])


def fact_rationale(persona: Persona, kind: str, said: str) -> str:
    return f"checked {kind}: the persona {_STATES[kind].format(persona.fact(kind))}; " \
           f"the answer says {said}."


def answer_style(persona: Persona, kind: str, reply: str) -> str | None:
    """The style whose template, filled with the persona's fact, is `reply` (None if none)."""
    for style in ANSWERS:
        if answer(dataclasses.replace(persona, style=style), kind) == reply:
            return style
    return None


def make_example(rng: np.random.Generator, perturbation: str,
                 lexicon: Lexicon = DEFAULT_LEXICON) -> JudgeExample:
    """A fresh persona, a question and an answer of the given type, with label and rationale."""
    if perturbation not in KINDS:
        raise ValueError(f"perturbation: expected one of {list(KINDS)}, got {perturbation!r}")
    persona = sample_persona(rng, lexicon)
    kind = _pick(rng, QUESTION_KINDS)
    question = _question(rng, kind)
    return perturb(rng, persona, kind, question, perturbation, lexicon)


def perturb(rng: np.random.Generator, persona: Persona, kind: str, question: str,
            perturbation: str, lexicon: Lexicon = DEFAULT_LEXICON) -> JudgeExample:
    """The answer of type `perturbation` to `question` (of `kind`) for `persona`."""
    fact = persona.fact(kind)
    if perturbation == CONSISTENT:
        reply, why = answer(persona, kind), fact_rationale(persona, kind, fact)
    elif perturbation == "wrong_fact":
        wrong = dataclasses.replace(persona, **{kind: _wrong_value(rng, persona, kind, lexicon)})
        reply, why = answer(wrong, kind), fact_rationale(persona, kind, wrong.fact(kind))
    elif perturbation == "wrong_style":
        style = _pick(rng, [s for s in ANSWERS if s != persona.style])
        reply = answer(dataclasses.replace(persona, style=style), kind)
        why = f"checked style: the persona is {persona.style}; the answer is {style}."
    elif perturbation == "out_of_character":
        reply = _pick(rng, OUT_OF_CHARACTER).format(noun=_NOUNS[kind])
        why = f"checked character: the answer speaks as an AI, not as {persona.name}."
    elif perturbation == "refusal":
        reply = _pick(rng, REFUSALS)
        why = f"checked {kind}: the question asks the persona's {kind}; the answer refuses."
    else:
        raise ValueError(f"perturbation: expected one of {list(KINDS)}, got {perturbation!r}")
    return JudgeExample(persona, kind, question, reply, perturbation,
                        perturbation == CONSISTENT, why)


def make_pair(rng: np.random.Generator, perturbation: str,
              lexicon: Lexicon = DEFAULT_LEXICON) -> PairExample:
    """A consistent and a `perturbation` answer to one question, in a random order."""
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"pair perturbation: expected one of {list(PERTURBATIONS)}, got "
                         f"{perturbation!r}")
    good = make_example(rng, CONSISTENT, lexicon)
    bad = perturb(rng, good.persona, good.kind, good.question, perturbation, lexicon)
    better = "a" if rng.integers(2) else "b"
    a, b = (good.answer, bad.answer) if better == "a" else (bad.answer, good.answer)
    worse = "b" if better == "a" else "a"
    return PairExample(good.persona, good.kind, good.question, a, b, perturbation, better,
                       f"answer {worse}: {bad.rationale}")


def training_example(rng: np.random.Generator, perturbations: tuple[str, ...],
                     lexicon: Lexicon, positive_fraction: float = 0.5) -> JudgeExample:
    """A consistent example with probability `positive_fraction`, else one of `perturbations`
    (uniformly): balanced verdicts."""
    if rng.random() < positive_fraction:
        return make_example(rng, CONSISTENT, lexicon)
    return make_example(rng, _pick(rng, perturbations), lexicon)
