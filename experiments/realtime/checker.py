"""The exact persona checker: is an answer true to the card? No model, only the card's facts.

    check = check_answer(card_text, question, reply)
    check.kind          # "home": the fact the question asks for (from its wording), or
                        # "out_of_scope": no persona question (a command, a general question)
    check.fact          # the reply states the card's fact (its template's slot, normalized);
                        # out of scope: the reply is a decline (any style's), stating no fact
    check.style         # the reply has the card's style (its template, whatever the fact)
    check.in_character  # not an AI's voice and not a refusal
    check.consistent    # all three

It is the metric the realtime policy is never trained on when it learns from the judge: the
judge and this checker agreeing over the course of RL is what says the judge is not being
hacked. It reads `data_pipelines.personas`' own templates, so on the corpus' reference answers
every check holds (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import re

from chorus.audio.text import normalize_text
from data_pipelines.personas import (
    ANSWERS,
    DECLINES,
    OUT_OF_SCOPE,
    QUESTION_KINDS,
    QUESTIONS,
    Persona,
    answer_states_fact,
)

_CARD = re.compile(r"name: (?P<name>.+?)\. age: (?P<age>\d+)\. home: (?P<home>.+?)\. "
                   r"job: (?P<job>.+?)\. likes: (?P<like0>.+?) and (?P<like1>.+?)\. "
                   r"style: (?P<style>\w+)\.$")
# What an answer that steps out of the persona says (the judge's out_of_character and refusal
# answers, and the general forms of both).
# Normalized (`normalize_text`: lower case, no punctuation, digits spelled).
_AI_VOICE = ("as an ai", "language model", "as an assistant", "i am an ai", "im an ai")
_REFUSALS = ("rather not say", "cannot share", "that is private", "cant share", "wont say",
             "will not say")


class CardError(ValueError):
    """A card text not in `Persona.card()`'s form."""


def parse_card(text: str) -> Persona:
    """The Persona whose `card()` is `text` (the form the corpus and the prompts hold)."""
    m = _CARD.match(text.strip())
    if m is None:
        raise CardError(f"persona card: expected 'name: .. age: .. home: .. job: .. likes: A "
                        f"and B. style: ..', got {text!r}")
    g = m.groupdict()
    try:
        return Persona(g["name"], int(g["age"]), g["home"], g["job"], (g["like0"], g["like1"]),
                       g["style"])
    except ValueError as e:
        raise CardError(f"persona card {text!r}: {e}") from None


def question_kind(question: str) -> str:
    """The fact a question asks for: the kind of the `QUESTIONS` wording it contains."""
    said = f" {normalize_text(question)} "
    for kind in QUESTION_KINDS:
        if any(f" {normalize_text(q)} " in said for q in QUESTIONS[kind]):
            return kind
    raise ValueError(f"question: expected one of the persona questions "
                     f"(data_pipelines.personas.QUESTIONS), got {question!r}")


def request_kind(question: str) -> str:
    """`question_kind`, or OUT_OF_SCOPE when the question is none of the persona questions."""
    try:
        return question_kind(question)
    except ValueError:
        return OUT_OF_SCOPE


@functools.cache
def _template(style: str, kind: str) -> re.Pattern:
    """The answer template of (style, kind) with its fact slot open, over normalized text."""
    marker = "qqfactqq"
    text = ANSWERS[style][kind].format(fact=marker, a="a")
    body = re.escape(normalize_text(text)).replace(r"\ a\ " + marker, r"\ (?:a|an)\ " + marker)
    slot = r"(?P<fact>\w+(?:\ \w+){0,3})"  # a fact is 1-4 words once normalized ("thirty four")
    return re.compile("^" + body.replace(marker, slot) + "$")


def fill(kind: str, reply: str) -> tuple[str, str] | None:
    """(style, fact) of the template for `kind` that the reply fills, the fact normalized;
    None if it fills none. Terse ("{fact}.") is tried last: the others are specific forms."""
    said = normalize_text(reply)
    for style in sorted(ANSWERS, key=lambda s: s == "terse"):
        m = _template(style, kind).match(said)
        if m:
            return style, m["fact"]
    return None


@dataclasses.dataclass(frozen=True)
class AnswerCheck:
    kind: str
    fact: bool
    style: bool
    ai_voice: bool
    refusal: bool

    @property
    def in_character(self) -> bool:
        return not (self.ai_voice or self.refusal)

    @property
    def consistent(self) -> bool:
        return self.fact and self.style and self.in_character


def check_answer(card: str | Persona, question: str, reply: str) -> AnswerCheck:
    """The checks of one reply. A reply in a template is checked on its slot (exactly the
    card's fact: "twenty four" is not "twenty"); another reply on whether it states the fact
    anywhere (`personas.answer_states_fact`)."""
    persona = card if isinstance(card, Persona) else parse_card(card)
    kind = request_kind(question)
    said = normalize_text(reply)
    if kind == OUT_OF_SCOPE:
        declined = [s for s, text in DECLINES.items() if normalize_text(text) == said]
        fact, style = bool(declined), persona.style in declined
    else:
        filled = fill(kind, reply)
        fact = (filled[1] == normalize_text(persona.fact(kind)) if filled is not None
                else answer_states_fact(persona, kind, reply))
        style = filled is not None and filled[0] == persona.style
    return AnswerCheck(kind=kind, fact=fact, style=style,
                       ai_voice=any(p in said for p in _AI_VOICE),
                       refusal=any(p in said for p in _REFUSALS))
