"""A tiny random sentence generator for the codec's synthetic corpus.

Why its own: the codec must train without waiting for the shared text generator; sentences
only need to cover English letters and common sounds, not to be meaningful.
"""

from __future__ import annotations

import numpy as np

_WORDS = {
    "det": "the a this that every one some my your our their".split(),
    "adj": ("big small red green blue old young quick slow happy quiet loud warm cold bright "
            "dark heavy light soft sharp brave gentle tall short clever lazy busy empty full "
            "strange simple early late fresh wild calm proud rough smooth sweet bitter").split(),
    "noun": ("cat dog bird fish horse child teacher doctor farmer king queen river mountain "
             "garden window table chair house city road ship train boat letter story song "
             "picture flower tree apple bread coffee water stone friend brother sister "
             "machine engine village forest island market school office kitchen winter summer "
             "morning evening jacket pocket bottle basket ladder mirror candle pencil button "
             "violin guitar zebra wizard puzzle voice question answer journey yellow orange "
             "sky cloud").split(),
    "verb": ("sees finds likes brings takes holds moves carries follows watches opens closes "
             "paints builds wants needs keeps throws catches pushes pulls fixes cleans visits "
             "reads writes draws helps calls leaves joins buys sells chooses hides").split(),
    "iverb": ("sleeps waits laughs sings jumps runs walks swims works dances smiles listens "
              "travels rests speaks whispers").split(),
    "adv": ("quickly slowly quietly happily often never always today again outside inside "
            "yesterday carefully gladly suddenly").split(),
    "prep": "near under over behind beside inside across around through past".split(),
    "name": ("anna james maria peter lucy oliver sophie victor hazel quentin jack zoe walter "
             "emily george kevin").split(),
}

_TEMPLATES = (
    "det adj noun verb det noun",
    "name verb det adj noun adv",
    "det noun iverb prep det noun",
    "name and name iverb adv",
    "det adj noun iverb",
    "name verb det noun prep det adj noun",
    "why does det noun iverb adv",
    "det noun verb name prep det noun",
    "name iverb prep det adj adj noun",
    "we verb det noun and det noun",
    "it is det adj noun",
    "name does not verb det noun",
)


def random_sentence(rng: np.random.Generator, min_words: int, max_words: int) -> str:
    """One sentence with between min_words and max_words words (trimmed / extended)."""
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))].split()
    words = [_WORDS[slot][rng.integers(len(_WORDS[slot]))] if slot in _WORDS else slot
             for slot in template]
    while len(words) < min_words:
        words += ["and", _WORDS["noun"][rng.integers(len(_WORDS["noun"]))]]
    return " ".join(words[:max_words])


def distinct_sentences(rng: np.random.Generator, count: int, min_words: int, max_words: int,
                       exclude: set[str] = frozenset()) -> list[str]:
    """`count` distinct sentences not in `exclude` (raises if the grammar cannot supply them)."""
    out: list[str] = []
    seen = set(exclude)
    for _ in range(count * 100):
        if len(out) == count:
            return out
        s = random_sentence(rng, min_words, max_words)
        if s not in seen:
            seen.add(s)
            out.append(s)
    raise ValueError(f"distinct_sentences: expected {count} new sentences, got {len(out)}")
