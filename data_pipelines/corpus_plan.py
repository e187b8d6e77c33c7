"""What to say and how: a deterministic stream of utterance specs per (seed, split, shard).

A spec carries the transcript, the eSpeak segments that realize it (inline tags switch the
controls of a segment), the TTS control context (instruction, inline-tagged text, speaker) and,
for dialogue specs, the persona card and the in-persona answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np

from data_pipelines import personas
from data_pipelines.synthesis import Segment
from data_pipelines.text_generator import SPLITS, SentenceGenerator, TextGeneratorConfig
from data_pipelines.voices import VOICES, get_voice

# Inline tag -> how it changes a segment's controls.
INLINE_TAGS = ("(whispering)", "(fast)", "(slowly)", "(high pitch)", "(low pitch)",
               "(loudly)", "(softly)")


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    seed: int = 0
    hours: float = 2.0
    shard_size: int = 50  # utterances per shard file
    split_fractions: Mapping[str, float] = dataclasses.field(default_factory=lambda: {
        "train": 0.85, "validation": 0.05, "test": 0.05, "test_compositional": 0.05})
    dialogue_fraction: float = 0.15  # of train / validation / test utterances
    inline_tag_fraction: float = 0.2
    rate_range: tuple[int, int] = (130, 210)
    pitch_range: tuple[int, int] = (25, 75)
    volume_range: tuple[int, int] = (60, 130)
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


def _apply_tag(tag: str, base: Segment) -> Segment:
    voice = get_voice(base.voice)
    changes = {
        "(whispering)": {"voice": voice.name.split("+")[0] + (
            "+whisperf" if voice.gender == "female" else "+whisper")},
        "(fast)": {"rate": min(base.rate + 60, 450)},
        "(slowly)": {"rate": max(base.rate - 50, 80)},
        "(high pitch)": {"pitch": min(base.pitch + 25, 99)},
        "(low pitch)": {"pitch": max(base.pitch - 25, 0)},
        "(loudly)": {"volume": min(int(base.volume * 1.5), 200)},
        "(softly)": {"volume": int(base.volume * 0.5)},
    }[tag]
    return dataclasses.replace(base, **changes)


def _realize(text: str, voice: str, rate: int, pitch: int, volume: int,
             rng: np.random.Generator, tag_fraction: float) -> tuple[str, tuple[Segment, ...]]:
    """(tagged text, segments): maybe one inline tag, at the start or mid-sentence."""
    base = Segment(text, voice, rate, pitch, volume)
    if rng.random() >= tag_fraction:
        return text, (base,)
    tag = INLINE_TAGS[int(rng.integers(len(INLINE_TAGS)))]
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
    dialogue_p = 0.0 if split == "test_compositional" else config.dialogue_fraction
    for i in range(10**9):
        uid = f"{split}-{shard_index:05d}-{i:06d}"
        voice = VOICES[int(rng.integers(len(VOICES)))].name
        rate = _uniform_int(rng, config.rate_range)
        pitch = _uniform_int(rng, config.pitch_range)
        volume = _uniform_int(rng, config.volume_range)
        extra = {}
        if rng.random() < dialogue_p:
            while True:
                ex = personas.sample_exchange(rng, generator.lexicon)
                if generator.split_of_key(ex.question + ex.persona.card()) == split:
                    break
            text, category = ex.question, "dialogue"
            extra = {"persona": ex.persona.card(), "answer": ex.answer,
                     "question_kind": ex.kind}
        else:
            sentence = generator.sample_for_split(rng, split)
            text, category = sentence.text, sentence.category
        tagged, segments = _realize(text, voice, rate, pitch, volume, rng,
                                    config.inline_tag_fraction)
        yield UtteranceSpec(uid=uid, split=split, category=category, text=text,
                            tagged_text=tagged, segments=segments, voice=voice, rate=rate,
                            pitch=pitch, volume=volume,
                            instruction=describe_controls(voice, rate, pitch, volume), **extra)
