"""Persona cards and (question, in-persona answer) pairs whose facts can be checked.

    rng = np.random.default_rng(0)
    ex = sample_exchange(rng)
    ex.persona.card()   # "name: Maya. age: 34. home: Lisbon. job: baker. likes: jazz and tea. ..."
    ex.question         # "Excuse me, where do you live?"
    ex.answer           # "Oh, I live in Lisbon, and I love it!"
    answer_states_fact(ex.persona, ex.kind, ex.answer)  # True

`split_lexicon` holds every k-th name and place out: the cards a model is evaluated on (the
judge's, the realtime policy's held-out cards) name people and places its training cards never
did.

Every answer contains its fact verbatim (after `normalize_text`), so a dialogue model's reply can
be checked against the card without a judge. Personas are drawn fresh per exchange, so the
model must read the card rather than memorize people.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chorus.audio.text import normalize_text
from data_pipelines.lexicon import DEFAULT_LEXICON, Lexicon

QUESTION_KINDS = ("name", "age", "home", "job", "likes")
# A request no card fact answers (a command, a general question): the persona declines it in
# its own style (`decline`), neither answering nor stepping out of character.
OUT_OF_SCOPE = "out_of_scope"
AGES = range(18, 90)  # a card's age is one of these (sample_persona)

QUESTIONS: dict[str, tuple[str, ...]] = {
    "name": ("What is your name?", "Who am I talking to?", "What should I call you?"),
    "age": ("How old are you?", "What is your age?", "May I ask how old you are?"),
    "home": ("Where do you live?", "Where is your home?", "Which city do you live in?"),
    "job": ("What do you do for a living?", "What is your job?", "Where do you work?"),
    "likes": ("What do you like?", "What are your hobbies?", "What do you enjoy?"),
}

# Said before the question: keeps the spoken turn in the corpus' 1.5-6 s range.
OPENERS = ("Hello there.", "Hi!", "Good morning.", "Good evening.", "Excuse me,", "Hey,",
           "Sorry to bother you,", "I was wondering,", "Nice to meet you.", "Tell me,")

# style -> kind -> answer template; {fact} is the persona's fact for that kind, {a} its article.
ANSWERS: dict[str, dict[str, str]] = {
    "cheerful": {
        "name": "Oh, I'm {fact}! Lovely to meet you.",
        "age": "I'm {fact} years young!",
        "home": "Oh, I live in {fact}, and I love it!",
        "job": "I'm {a} {fact}, best job ever!",
        "likes": "I adore {fact}!",
    },
    "formal": {
        "name": "My name is {fact}.",
        "age": "I am {fact} years old.",
        "home": "I reside in {fact}.",
        "job": "I work as {a} {fact}.",
        "likes": "I am fond of {fact}.",
    },
    "terse": {
        "name": "{fact}.",
        "age": "{fact}.",
        "home": "{fact}.",
        "job": "{fact}.",
        "likes": "{fact}.",
    },
    "folksy": {
        "name": "Folks call me {fact}.",
        "age": "Well, I'm {fact} years old, give or take.",
        "home": "I'm from {fact}, born and raised.",
        "job": "I've been {a} {fact} for a good while now.",
        "likes": "Nothing beats {fact}, I tell you.",
    },
}


# style -> the persona's decline of an out-of-scope request. None of them is a refusal to share
# a fact ("I would rather not say"), which is wrong when the card answers the question.
DECLINES: dict[str, str] = {
    "cheerful": "Ha, that is not my thing, but ask me about me!",
    "formal": "I am afraid I cannot help with that.",
    "terse": "Can't help with that.",
    "folksy": "Well, that is not my line of work, friend.",
}


@dataclasses.dataclass(frozen=True)
class Persona:
    name: str
    age: int
    home: str
    job: str
    likes: tuple[str, str]
    style: str

    def __post_init__(self):
        if self.style not in ANSWERS:
            raise ValueError(f"Persona.style: expected one of {sorted(ANSWERS)}, got "
                             f"{self.style!r}")
        if not 1 <= self.age <= 120:
            raise ValueError(f"Persona.age: expected 1..120, got {self.age}")

    def fact(self, kind: str) -> str:
        if kind == "likes":
            return f"{self.likes[0]} and {self.likes[1]}"
        if kind not in QUESTION_KINDS:
            raise ValueError(f"question kind: expected one of {QUESTION_KINDS}, got {kind!r}")
        return str(getattr(self, kind))

    def card(self) -> str:
        return (f"name: {self.name}. age: {self.age}. home: {self.home}. job: {self.job}. "
                f"likes: {self.fact('likes')}. style: {self.style}.")


@dataclasses.dataclass(frozen=True)
class Exchange:
    persona: Persona
    kind: str
    question: str
    answer: str


def sample_persona(rng: np.random.Generator, lexicon: Lexicon = DEFAULT_LEXICON) -> Persona:
    def pick(words):
        return words[int(rng.integers(len(words)))]

    likes = rng.choice(len(lexicon.likes), size=2, replace=False)
    return Persona(name=pick(lexicon.names), age=int(rng.integers(AGES.start, AGES.stop)),
                   home=pick(lexicon.places), job=pick(lexicon.jobs),
                   likes=(lexicon.likes[int(likes[0])], lexicon.likes[int(likes[1])]),
                   style=pick(lexicon.styles))


def split_lexicon(lexicon: Lexicon = DEFAULT_LEXICON, every: int = 4) -> tuple[Lexicon, Lexicon]:
    """(training lexicon, held-out lexicon): names and places at indices 0, every, 2*every, ..
    are held out; the rest train. Other lists are shared."""
    if not isinstance(every, int) or every < 2:
        raise ValueError(f"split_lexicon every: expected an int >= 2, got {every!r}")

    def split(words):
        return (tuple(w for i, w in enumerate(words) if i % every),
                tuple(w for i, w in enumerate(words) if i % every == 0))

    names, held_names = split(lexicon.names)
    places, held_places = split(lexicon.places)
    return (dataclasses.replace(lexicon, names=names, places=places),
            dataclasses.replace(lexicon, names=held_names, places=held_places))


def answer(persona: Persona, kind: str) -> str:
    fact = persona.fact(kind)
    text = ANSWERS[persona.style][kind].format(fact=fact, a="an" if fact[0] in "aeiou" else "a")
    return text[0].upper() + text[1:]


def decline(persona: Persona) -> str:
    """The persona's in-character answer to an out-of-scope request."""
    return DECLINES[persona.style]


def every_answer(lexicon: Lexicon = DEFAULT_LEXICON) -> tuple[str, ...]:
    """Every answer a card of `lexicon` can give (each style, question kind and fact, and each
    style's decline), sorted: what a model that speaks its answers needs the speech of."""
    base = Persona(lexicon.names[0], AGES.start, lexicon.places[0], lexicon.jobs[0],
                   (lexicon.likes[0], lexicon.likes[1]), lexicon.styles[0])
    facts = {"name": [{"name": n} for n in lexicon.names],
             "age": [{"age": a} for a in AGES],
             "home": [{"home": h} for h in lexicon.places],
             "job": [{"job": j} for j in lexicon.jobs],
             "likes": [{"likes": (a, b)} for a in lexicon.likes for b in lexicon.likes
                       if a != b]}
    out = set()
    for style in lexicon.styles:
        persona = dataclasses.replace(base, style=style)
        out.add(decline(persona))
        for kind, changes in facts.items():
            out.update(answer(dataclasses.replace(persona, **c), kind) for c in changes)
    return tuple(sorted(out))


def sample_exchange(rng: np.random.Generator,
                    lexicon: Lexicon = DEFAULT_LEXICON) -> Exchange:
    persona = sample_persona(rng, lexicon)
    kind = QUESTION_KINDS[int(rng.integers(len(QUESTION_KINDS)))]
    questions = QUESTIONS[kind]
    question = questions[int(rng.integers(len(questions)))]
    opener = OPENERS[int(rng.integers(len(OPENERS)))]
    if opener.endswith(","):
        question = question[0].lower() + question[1:]
    return Exchange(persona, kind, f"{opener} {question}", answer(persona, kind))


def answer_states_fact(persona: Persona, kind: str, reply: str) -> bool:
    """Whether `reply` states the persona's fact for `kind` (whole words, normalized)."""
    fact = normalize_text(persona.fact(kind))
    return f" {fact} " in f" {normalize_text(reply)} "
