"""A seeded template grammar of short English sentences, with a held-out compositional split.

    gen = SentenceGenerator(TextGeneratorConfig(held_out_fraction=0.15))
    rng = np.random.default_rng(0)
    s = gen.sample_for_split(rng, "test_compositional")
    s.text       # "Maya flew from Oslo to Lima."
    s.pairs      # (("NAME", "Maya", "PLACE", "Oslo"),)  <- a held-out combination

Compositional split: sentences fill slots of typed templates. Some slot *type pairs* are
"compositional" (name x place, verb x object, color x object, name x food, adjective x animal).
A seeded fraction of the concrete word pairs (e.g. Maya x Oslo) is held out: `train`,
`validation` and `test` never contain a held-out pair; `test_compositional` always contains at
least one. Every word keeps at least one non-held-out partner, so each word of a
test_compositional sentence is seen in training, only the combination is new.
`train` / `validation` / `test` are disjoint by text (bucketed by a hash of the sentence).
These are the text splits; the corpus (corpus_plan.SPLITS) adds splits that hold out voices or
prosody and draw their texts like `test`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping

import numpy as np

from data_pipelines.lexicon import DEFAULT_LEXICON, Lexicon

# The splits of the text distribution (the corpus adds voice/prosody splits on top).
TEXT_SPLITS = ("train", "validation", "test", "test_compositional")
CATEGORIES = ("numbers", "dates", "times", "names", "places", "commands", "facts", "questions")

# slot name (without trailing digits) -> slot type
_SLOT_TYPES = {"name": "NAME", "place": "PLACE", "object": "OBJECT", "color": "COLOR",
               "verb": "VERB", "food": "FOOD", "animal": "ANIMAL", "adj": "ADJ",
               "number": "NUMBER", "small": "SMALL", "time": "TIME", "month": "MONTH",
               "day": "DAY", "weekday": "WEEKDAY", "year": "YEAR", "fact": "FACT"}
# Type pairs whose concrete combinations may be held out.
COMPOSITIONAL_PAIRS = (("NAME", "PLACE"), ("VERB", "OBJECT"), ("COLOR", "OBJECT"),
                       ("NAME", "FOOD"), ("ADJ", "ANIMAL"))
_LEXICON_LIST = {"NAME": "names", "PLACE": "places", "OBJECT": "objects", "COLOR": "colors",
                 "VERB": "verbs", "FOOD": "foods", "ANIMAL": "animals", "ADJ": "adjectives",
                 "MONTH": "months", "WEEKDAY": "weekdays", "FACT": "facts"}

TEMPLATES: Mapping[str, tuple[str, ...]] = {
    "numbers": (
        "{name} bought {number} {food} at the market.",
        "The {adj} {animal} weighs {number} grams.",
        "Please add {small} {food} to the list.",
        "There are {number} people waiting in {place}.",
        "Room {number} has a {color} {object}.",
        "I drew {small} pictures of a {adj} {animal}.",
    ),
    "dates": (
        "{name} moves to {place} on {month} {day}.",
        "The meeting is on {weekday}, {month} {day}.",
        "Her birthday is {month} {day}, {year}.",
        "We opened the shop in {year}.",
        "The {color} {object} arrives on {weekday}.",
        "{name} was born in {place} in {year}.",
    ),
    "times": (
        "The train to {place} leaves at {time}.",
        "Wake me up at {time} on {weekday}.",
        "{name} eats {food} at {time} every day.",
        "Set an alarm for {time}.",
        "The {adj} {animal} sleeps until {time}.",
    ),
    "names": (
        "{name} and {name2} share the {color} {object}.",
        "{name} likes {food} more than {name2} does.",
        "Tell {name} that {name2} called.",
        "{name} has a {adj} {animal}.",
        "{name} gave {food} to the {adj} {animal}.",
    ),
    "places": (
        "{name} flew from {place} to {place2}.",
        "{name} lives in {place}.",
        "The best {food} in {place} is near the station.",
        "It is raining in {place} today.",
        "{name} found a {adj} {animal} in {place}.",
    ),
    "commands": (
        "{verb} the {color} {object}.",
        "Please {verb} the {object} in the kitchen.",
        "{verb} the {object} before {time}.",
        "Ask {name} to {verb} the {color} {object}.",
        "Do not {verb} the {object} yet.",
        "Bring the {color} {object} to {name}.",
    ),
    "facts": (
        "{fact}",
    ),
    "questions": (
        "Where does {name} live?",
        "Did {name} visit {place} last {weekday}?",
        "What time does the train to {place} leave?",
        "Can you {verb} the {color} {object}?",
        "How many {food} did {name} buy?",
        "Is the {adj} {animal} asleep?",
        "Who has the {color} {object}?",
        "Does {name} like {food}?",
    ),
}

_SLOT_RE = re.compile(r"\{([a-z]+)(\d*)\}")


@dataclasses.dataclass(frozen=True)
class Sentence:
    text: str
    category: str
    # Compositional pairs it contains: (type_a, word_a, type_b, word_b).
    pairs: tuple[tuple[str, str, str, str], ...]


@dataclasses.dataclass(frozen=True)
class TextGeneratorConfig:
    held_out_fraction: float = 0.15  # of the concrete compositional pairs
    composition_seed: int = 0  # which pairs are held out
    words_per_list: int | None = None  # vocabulary knob: Lexicon.limited(k)
    category_weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(CATEGORIES, 1.0))
    validation_fraction: float = 0.05  # of non-compositional sentences, by text hash
    test_fraction: float = 0.05

    def __post_init__(self):
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ValueError(f"TextGeneratorConfig.held_out_fraction: expected in (0, 1), got "
                             f"{self.held_out_fraction}")
        unknown = set(self.category_weights) - set(CATEGORIES)
        if unknown or not any(w > 0 for w in self.category_weights.values()):
            raise ValueError(f"TextGeneratorConfig.category_weights: expected positive weights "
                             f"over {CATEGORIES}, got {dict(self.category_weights)}")
        if any(w < 0 for w in self.category_weights.values()):
            raise ValueError(f"TextGeneratorConfig.category_weights: expected weights >= 0, got "
                             f"{dict(self.category_weights)}")
        fractions = (self.validation_fraction, self.test_fraction)
        if min(fractions) <= 0 or sum(fractions) >= 1:
            raise ValueError(f"TextGeneratorConfig.validation_fraction/test_fraction: expected "
                             f"positive with sum < 1, got {fractions}")
        if self.words_per_list is not None and self.words_per_list < 2:
            raise ValueError(f"TextGeneratorConfig.words_per_list: expected None or >= 2, got "
                             f"{self.words_per_list}")


def stable_unit(*parts) -> float:
    """A deterministic pseudo-uniform in [0, 1) from `parts` (same on every machine / run)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class SentenceGenerator:
    def __init__(self, config: TextGeneratorConfig = TextGeneratorConfig(),
                 lexicon: Lexicon = DEFAULT_LEXICON):
        self.config = config
        self.lexicon = lexicon.limited(config.words_per_list) if config.words_per_list else lexicon
        weights = np.array([config.category_weights.get(c, 0.0) for c in CATEGORIES])
        self._category_p = weights / weights.sum()
        self._held_out = self._choose_held_out_pairs()

    # ----------------------------------------------------------------- held-out pairs

    def _words(self, slot_type: str) -> tuple[str, ...]:
        return getattr(self.lexicon, _LEXICON_LIST[slot_type])

    def _choose_held_out_pairs(self) -> frozenset[tuple[str, str, str, str]]:
        held = set()
        for type_a, type_b in COMPOSITIONAL_PAIRS:
            words_a, words_b = self._words(type_a), self._words(type_b)
            score = {(a, b): stable_unit(self.config.composition_seed, type_a, a, type_b, b)
                     for a in words_a for b in words_b}
            # Each word's lowest-scoring pair stays in training, so every word is seen there.
            anchors = {min(((a, b) for b in words_b), key=score.get) for a in words_a}
            anchors |= {min(((a, b) for a in words_a), key=score.get) for b in words_b}
            held |= {(type_a, a, type_b, b) for (a, b), s in score.items()
                     if s < self.config.held_out_fraction and (a, b) not in anchors}
        return frozenset(held)

    def is_held_out(self, pair: tuple[str, str, str, str]) -> bool:
        return pair in self._held_out

    @property
    def held_out_pairs(self) -> frozenset[tuple[str, str, str, str]]:
        return self._held_out

    # ----------------------------------------------------------------- sampling

    def _fill(self, slot_type: str, rng: np.random.Generator, used: set[str]) -> str:
        if slot_type == "NUMBER":
            return str(int(rng.integers(2, self.lexicon.max_number + 1)))
        if slot_type == "SMALL":
            return str(int(rng.integers(2, 13)))
        if slot_type == "DAY":
            return str(int(rng.integers(1, 29)))
        if slot_type == "YEAR":
            return str(int(rng.integers(1990, 2031)))
        if slot_type == "TIME":
            return f"{int(rng.integers(1, 13))}:{5 * int(rng.integers(0, 12)):02d}"
        choices = [w for w in self._words(slot_type) if w not in used]
        return choices[int(rng.integers(len(choices)))]

    def sample(self, rng: np.random.Generator) -> Sentence:
        """One sentence from the full distribution (any split)."""
        category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=self._category_p))]
        templates = TEMPLATES[category]
        template = templates[int(rng.integers(len(templates)))]
        fillers: dict[str, str] = {}
        first_of_type: dict[str, str] = {}
        used: set[str] = set()
        for match in _SLOT_RE.finditer(template):
            key = match.group(0)
            if key in fillers:
                continue
            slot_type = _SLOT_TYPES[match.group(1)]
            word = self._fill(slot_type, rng, used)
            used.add(word)
            fillers[key] = word
            first_of_type.setdefault(slot_type, word)
        text = _SLOT_RE.sub(lambda m: fillers[m.group(0)], template)
        text = text[0].upper() + text[1:]
        pairs = tuple((ta, first_of_type[ta], tb, first_of_type[tb])
                      for ta, tb in COMPOSITIONAL_PAIRS
                      if ta in first_of_type and tb in first_of_type)
        return Sentence(text=text, category=category, pairs=pairs)

    def split_of(self, sentence: Sentence) -> str:
        """Which split a sentence belongs to (a pure function of its text and pairs)."""
        if any(self.is_held_out(p) for p in sentence.pairs):
            return "test_compositional"
        return self.split_of_key(sentence.text)

    def split_of_key(self, key: str) -> str:
        """train / validation / test bucket of a text key, by a stable hash."""
        u = stable_unit("split", key)
        if u < self.config.validation_fraction:
            return "validation"
        if u < self.config.validation_fraction + self.config.test_fraction:
            return "test"
        return "train"

    def sample_for_split(self, rng: np.random.Generator, split: str,
                         max_tries: int = 10_000) -> Sentence:
        """Rejection-samples until the sentence belongs to `split`."""
        if split not in TEXT_SPLITS:
            raise ValueError(f"split: expected one of {TEXT_SPLITS}, got {split!r}")
        for _ in range(max_tries):
            sentence = self.sample(rng)
            if self.split_of(sentence) == split:
                return sentence
        raise RuntimeError(f"no sentence for split {split!r} in {max_tries} tries; "
                           "check held_out_fraction / category_weights")

    def vocabulary(self) -> frozenset[str]:
        """Every lowercase word the grammar can produce, excluding digits."""
        words = set()
        for templates in TEMPLATES.values():
            for t in templates:
                words |= set(re.findall(r"[a-z]+", _SLOT_RE.sub(" ", t).lower()))
        for name in _LEXICON_LIST.values():
            for entry in getattr(self.lexicon, name):
                words |= set(re.findall(r"[a-z]+", entry.lower()))
        return frozenset(words)

    def surface_texts(self) -> list[str]:
        """Every lexicon entry and every template with its slots blanked, as written (cased):
        extra tokenizer-training text so rare words still get pieces."""
        texts = [_SLOT_RE.sub(" ", t) for templates in TEMPLATES.values() for t in templates]
        for name in _LEXICON_LIST.values():
            texts += list(getattr(self.lexicon, name))
        return texts
