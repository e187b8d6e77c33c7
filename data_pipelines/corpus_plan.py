"""What to say and how: a deterministic stream of utterance specs per (seed, split, shard).

A spec carries the transcript, the eSpeak segments that realize it (inline tags switch the
controls of a segment), the TTS control context (instruction, inline-tagged text, speaker) and,
for dialogue specs, the persona card and the in-persona answer.

Splits (SPLITS): the text splits of text_generator (train / validation / test /
test_compositional) spoken by the *training voices* at the *training prosody*, plus two
generalization test splits whose texts are drawn like `test`'s:
  test_voices   only the held-out voices: every voice of a held-out accent and every voice of
                a held-out variant (CorpusConfig.held_out_accents / held_out_variants); no
                other split ever uses one, not even in an inline-tagged segment.
  test_prosody  training voices, with the rate and/or the pitch drawn from
                CorpusConfig.prosody_rate_ranges / prosody_pitch_ranges, outside rate_range /
                pitch_range on both sides; no inline tags (a segment keeps the drawn values).
The other splits' base controls stay inside rate_range / pitch_range; their inline tags
("(fast)", "(low pitch)", ...) can still move one segment beyond them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np

from data_pipelines import espeak, personas
from data_pipelines.synthesis import Segment
from data_pipelines.text_generator import TEXT_SPLITS, SentenceGenerator, TextGeneratorConfig
from data_pipelines.voices import ACCENTS, VARIANTS, VOICES, Voice, get_voice

HELD_OUT_VOICES_SPLIT = "test_voices"
HELD_OUT_PROSODY_SPLIT = "test_prosody"
# Every split of the corpus (new ones only at the end: a split's index seeds its streams).
SPLITS = (*TEXT_SPLITS, HELD_OUT_VOICES_SPLIT, HELD_OUT_PROSODY_SPLIT)
# The text split each corpus split draws its sentences from.
TEXT_SPLIT_OF = {**{s: s for s in TEXT_SPLITS}, HELD_OUT_VOICES_SPLIT: "test",
                 HELD_OUT_PROSODY_SPLIT: "test"}
# The variants the "(whispering)" tag switches a segment to: held out, a training voice's
# tagged segment would speak in a held-out voice.
WHISPER_VARIANTS = ("whisper", "whisperf")

# Inline tag -> how it changes a segment's controls.
INLINE_TAGS = ("(whispering)", "(fast)", "(slowly)", "(high pitch)", "(low pitch)",
               "(loudly)", "(softly)")


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    seed: int = 0
    hours: float = 2.0
    shard_size: int = 50  # utterances per shard file
    split_fractions: Mapping[str, float] = dataclasses.field(default_factory=lambda: {
        "train": 0.79, "validation": 0.05, "test": 0.05, "test_compositional": 0.05,
        HELD_OUT_VOICES_SPLIT: 0.03, HELD_OUT_PROSODY_SPLIT: 0.03})
    dialogue_fraction: float = 0.15  # of train / validation / test utterances
    inline_tag_fraction: float = 0.2
    rate_range: tuple[int, int] = (130, 210)
    pitch_range: tuple[int, int] = (25, 75)
    volume_range: tuple[int, int] = (60, 130)
    # test_voices: voices.ACCENTS / VARIANTS keys whose every voice only test_voices speaks in.
    # Disjoint from experiments.codec's held-out voices (those are the codec's unseen voices,
    # read from the train and test splits).
    held_out_accents: tuple[str, ...] = ("en-gb-x-gbcwmd",)
    held_out_variants: tuple[str, ...] = ("f4", "m6")
    # test_prosody: (low, high) ranges outside rate_range / pitch_range, one drawn per use.
    prosody_rate_ranges: tuple[tuple[int, int], ...] = ((95, 120), (220, 260))
    prosody_pitch_ranges: tuple[tuple[int, int], ...] = ((5, 18), (82, 95))
    min_seconds: float = 1.5
    max_seconds: float = 6.0
    text: TextGeneratorConfig = TextGeneratorConfig()

    def __post_init__(self):
        def fail(field, expected, got):
            raise ValueError(f"CorpusConfig.{field}: expected {expected}, got {got!r}")

        if self.hours <= 0:
            fail("hours", "> 0", self.hours)
        if self.shard_size < 1:
            fail("shard_size", ">= 1", self.shard_size)
        if set(self.split_fractions) != set(SPLITS) or min(self.split_fractions.values()) <= 0:
            fail("split_fractions", f"positive fractions for exactly {SPLITS}",
                 dict(self.split_fractions))
        for name in ("dialogue_fraction", "inline_tag_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                fail(name, "a fraction in [0, 1]", getattr(self, name))
        for name in ("rate_range", "pitch_range", "volume_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                fail(name, "(low, high) with low <= high", (lo, hi))
        if not 0 < self.min_seconds < self.max_seconds:
            fail("min_seconds/max_seconds", "0 < min < max",
                 (self.min_seconds, self.max_seconds))
        for name, known in (("held_out_accents", ACCENTS), ("held_out_variants", VARIANTS)):
            values = tuple(getattr(self, name))
            unknown = [v for v in values if v not in known]
            if unknown or len(set(values)) != len(values):
                fail(name, f"distinct names from {sorted(known)}", values)
        if whispers := set(self.held_out_variants) & set(WHISPER_VARIANTS):
            fail("held_out_variants", f"none of {WHISPER_VARIANTS} (the '(whispering)' tag "
                 "switches training voices to them)", tuple(sorted(whispers)))
        if not self.held_out_accents and not self.held_out_variants:
            fail("held_out_accents/held_out_variants", "at least one held-out accent or "
                 "variant (the voices of test_voices)", ((), ()))
        if len(self.held_out_accents) == len(ACCENTS):
            fail("held_out_accents", "at least one accent left for training",
                 self.held_out_accents)
        for name, train, valid in (
                ("prosody_rate_ranges", self.rate_range, espeak.RATE_RANGE),
                ("prosody_pitch_ranges", self.pitch_range, espeak.PITCH_RANGE)):
            ranges = tuple(tuple(r) for r in getattr(self, name))
            if not ranges or any(
                    len(r) != 2 or not valid[0] <= r[0] <= r[1] <= valid[1]
                    or (r[0] <= train[1] and train[0] <= r[1]) for r in ranges):
                fail(name, f"(low, high) ranges within eSpeak's {valid} outside the training "
                     f"range {tuple(train)}", ranges)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["split_fractions"] = dict(self.split_fractions)
        d["text"]["category_weights"] = dict(self.text.category_weights)
        return d


@dataclasses.dataclass(frozen=True)
class UtteranceSpec:
    uid: str
    split: str
    category: str  # a text_generator category, or "dialogue"
    text: str  # the plain transcript (what is said)
    tagged_text: str  # TTS input: the transcript with inline tags
    segments: tuple[Segment, ...]
    voice: str
    rate: int
    pitch: int
    volume: int
    instruction: str
    persona: str = ""  # dialogue only: the persona card
    answer: str = ""  # dialogue only: the in-persona answer
    question_kind: str = ""  # dialogue only

    def metadata(self) -> dict:
        d = dataclasses.asdict(self)
        del d["segments"]
        d["speaker_id"] = get_voice(self.voice).speaker_id
        return d


def held_out_voices(config: CorpusConfig) -> tuple[Voice, ...]:
    """The voices of test_voices: those of a held-out accent or of a held-out variant."""
    return tuple(v for v in VOICES if v.accent in config.held_out_accents
                 or v.variant in config.held_out_variants)


def training_voices(config: CorpusConfig) -> tuple[Voice, ...]:
    """The voices of every split but test_voices."""
    held = set(held_out_voices(config))
    return tuple(v for v in VOICES if v not in held)


def _uniform_int(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


PACES = ("slowly", "at a normal pace", "quickly")
HEIGHTS = ("a low pitch", "a normal pitch", "a high pitch")
LOUDNESSES = ("quietly", "at a normal volume", "loudly")


def control_levels(rate: int, pitch: int, volume: int) -> tuple[str, str, str]:
    """The words an instruction uses for eSpeak's rate / pitch / volume: one of PACES,
    HEIGHTS and LOUDNESSES each (low, normal, high)."""
    level = lambda x, lo, hi: 0 if x < lo else 2 if x > hi else 1
    return (PACES[level(rate, 150, 190)], HEIGHTS[level(pitch, 40, 60)],
            LOUDNESSES[level(volume, 80, 115)])


def describe_controls(voice: str, rate: int, pitch: int, volume: int) -> str:
    """A TTS instruction (well under 200 characters) that states the voice and its controls."""
    pace, height, loudness = control_levels(rate, pitch, volume)
    return f"Use {get_voice(voice).describe()}. Speak {pace}, with {height}, {loudness}."


def _choose(rng: np.random.Generator, options: tuple):
    return options[int(rng.integers(len(options)))]


def _whisper_voice(name: str) -> str:
    """The voice a "(whispering)" segment of `name` speaks in."""
    voice = get_voice(name)
    return voice.accent + ("+whisperf" if voice.gender == "female" else "+whisper")


def _apply_tag(tag: str, base: Segment) -> Segment:
    changes = {
        "(whispering)": {"voice": _whisper_voice(base.voice)},
        "(fast)": {"rate": min(base.rate + 60, 450)},
        "(slowly)": {"rate": max(base.rate - 50, 80)},
        "(high pitch)": {"pitch": min(base.pitch + 25, 99)},
        "(low pitch)": {"pitch": max(base.pitch - 25, 0)},
        "(loudly)": {"volume": min(int(base.volume * 1.5), 200)},
        "(softly)": {"volume": int(base.volume * 0.5)},
    }[tag]
    return dataclasses.replace(base, **changes)


def _realize(text: str, voice: str, rate: int, pitch: int, volume: int,
             rng: np.random.Generator, tag_fraction: float,
             tags: tuple[str, ...] = INLINE_TAGS) -> tuple[str, tuple[Segment, ...]]:
    """(tagged text, segments): maybe one inline tag of `tags`, at the start or mid-sentence."""
    base = Segment(text, voice, rate, pitch, volume)
    if rng.random() >= tag_fraction:
        return text, (base,)
    tag = tags[int(rng.integers(len(tags)))]
    words = text.split()
    if len(words) < 4 or rng.random() < 0.5:
        return f"{tag} {text}", (_apply_tag(tag, base),)
    cut = int(rng.integers(2, len(words) - 1))
    first, second = " ".join(words[:cut]), " ".join(words[cut:])
    return (f"{first} {tag} {second}",
            (dataclasses.replace(base, text=first),
             _apply_tag(tag, dataclasses.replace(base, text=second))))


def spec_stream(config: CorpusConfig, split: str, shard_index: int) -> Iterator[UtteranceSpec]:
    """An endless, deterministic stream of specs for one shard of one split."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([config.seed, SPLITS.index(split), shard_index])
    generator = SentenceGenerator(config.text)
    text_split = TEXT_SPLIT_OF[split]
    dialogue_p = 0.0 if text_split == "test_compositional" else config.dialogue_fraction
    held_out = split == HELD_OUT_VOICES_SPLIT
    pool = held_out_voices(config) if held_out else training_voices(config)
    prosody = split == HELD_OUT_PROSODY_SPLIT
    tag_fraction = 0.0 if prosody else config.inline_tag_fraction
    for i in range(10**9):
        uid = f"{split}-{shard_index:05d}-{i:06d}"
        voice = pool[int(rng.integers(len(pool)))].name
        rate = _uniform_int(rng, config.rate_range)
        pitch = _uniform_int(rng, config.pitch_range)
        volume = _uniform_int(rng, config.volume_range)
        if prosody:  # "rate", "pitch" or both outside the training range, either side
            which = int(rng.integers(3))
            if which != 1:
                rate = _uniform_int(rng, _choose(rng, config.prosody_rate_ranges))
            if which != 0:
                pitch = _uniform_int(rng, _choose(rng, config.prosody_pitch_ranges))
        extra = {}
        if rng.random() < dialogue_p:
            while True:
                ex = personas.sample_exchange(rng, generator.lexicon)
                if generator.split_of_key(ex.question + ex.persona.card()) == text_split:
                    break
            text, category = ex.question, "dialogue"
            extra = {"persona": ex.persona.card(), "answer": ex.answer,
                     "question_kind": ex.kind}
        else:
            sentence = generator.sample_for_split(rng, text_split)
            text, category = sentence.text, sentence.category
        tags = INLINE_TAGS
        if held_out and get_voice(_whisper_voice(voice)) not in pool:
            tags = tuple(t for t in INLINE_TAGS if t != "(whispering)")
        tagged, segments = _realize(text, voice, rate, pitch, volume, rng, tag_fraction, tags)
        yield UtteranceSpec(uid=uid, split=split, category=category, text=text,
                            tagged_text=tagged, segments=segments, voice=voice, rate=rate,
                            pitch=pitch, volume=volume,
                            instruction=describe_controls(voice, rate, pitch, volume), **extra)
