"""Instructions in many phrasings, and what TTS training holds out for its test splits.

The corpus states each utterance's controls in one template (data_pipelines.corpus_plan.
describe_controls): "Use a scottish female voice. Speak slowly, with a low pitch, quietly."
A model trained on one template learns the template's positions, not the controls, so the
regime rephrases every training instruction: `parse` reads the template back (exactly: the
template is ours), `rephrase` says the same controls through one of several sentence frames
with synonyms, the pieces in random order, a "normal" level sometimes left unsaid (it is the
default). An instruction not in the template (another dataset's) is kept as written.

Held out of TTS training, so the test split measures generalization:
    HELD_OUT_VOICES        the voices the codec holds out (experiments.codec.settings), so
                           an unseen voice is unseen by the LM, the codec and its speaker
                           encoder alike: it can only be cloned from a reference clip
    HELD_OUT_COMBINATIONS  (pace, pitch, loudness) level combinations training never sees;
                           each level alone is seen, only the combination is new
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from data_pipelines.corpus_plan import HEIGHTS, LOUDNESSES, PACES, control_levels
from data_pipelines.records import field_text
from experiments.codec.settings import DEFAULT_HELDOUT_VOICES

MAX_CHARS = 200
HELD_OUT_VOICES = DEFAULT_HELDOUT_VOICES
HELD_OUT_COMBINATIONS = (("quickly", "a low pitch", "quietly"),
                         ("slowly", "a high pitch", "loudly"),
                         ("at a normal pace", "a high pitch", "quietly"))

_ALTERNATIVES = ["|".join(map(re.escape, v)) for v in (PACES, HEIGHTS, LOUDNESSES)]
_TEMPLATE = re.compile(
    rf"Use (?P<voice>an? [a-z ]+ voice)\. Speak (?P<pace>{_ALTERNATIVES[0]}), with "
    rf"(?P<height>{_ALTERNATIVES[1]}), (?P<loudness>{_ALTERNATIVES[2]})\.")


@dataclasses.dataclass(frozen=True)
class Controls:
    voice: str  # "a scottish female voice"
    pace: str  # one of PACES
    height: str  # one of HEIGHTS
    loudness: str  # one of LOUDNESSES


def parse(instruction: str) -> Controls | None:
    """The controls of a corpus-template instruction, None for any other text."""
    m = _TEMPLATE.fullmatch(instruction.strip())
    return Controls(**m.groupdict()) if m else None


# Ways to say each level (index 0 is the template's own words).
_SAY = {
    "slowly": ("slowly", "at a slow pace", "unhurriedly", "taking your time"),
    "at a normal pace": ("at a normal pace", "at an even pace", "at a moderate speed"),
    "quickly": ("quickly", "fast", "at a brisk pace", "rapidly"),
    "a low pitch": ("with a low pitch", "in a low register", "with a deep pitch"),
    "a normal pitch": ("with a normal pitch", "at a natural pitch", "in a mid register"),
    "a high pitch": ("with a high pitch", "in a high register", "with a raised pitch"),
    "quietly": ("quietly", "softly", "at a low volume", "in a hushed level"),
    "at a normal volume": ("at a normal volume", "at a comfortable volume",
                           "at a moderate loudness"),
    "loudly": ("loudly", "at a high volume", "with a strong, loud delivery"),
}
_NORMAL = ("at a normal pace", "a normal pitch", "at a normal volume")
_FRAMES = (
    "Use {voice}. Speak {rest}.",
    "{Voice}, speaking {rest}.",
    "Read this in {voice}, {rest}.",
    "Please talk {rest}, using {voice}.",
    "Say it {rest} in {voice}.",
    "Voice: {voice}. Delivery: {rest}.",
)


def rephrase(controls: Controls, rng: np.random.Generator, skip_normal: float = 0.3) -> str:
    """The same controls in a random phrasing (<= MAX_CHARS characters)."""
    pieces = []
    for level in (controls.pace, controls.height, controls.loudness):
        if level in _NORMAL and rng.random() < skip_normal:
            continue
        options = _SAY[level]
        pieces.append(options[int(rng.integers(len(options)))])
    pieces = [pieces[i] for i in rng.permutation(len(pieces))]
    rest = ", ".join(pieces[:-1]) + (" and " if len(pieces) > 1 else "") + pieces[-1] \
        if pieces else "naturally"
    frame = _FRAMES[int(rng.integers(len(_FRAMES)))]
    text = frame.format(voice=controls.voice, Voice=controls.voice[0].upper()
                        + controls.voice[1:], rest=rest)
    return text[:MAX_CHARS]


def training_instruction(instruction: str, rng: np.random.Generator) -> str:
    controls = parse(instruction)
    return instruction if controls is None else rephrase(controls, rng)


# ----------------------------------------------------------------------------- held out


def held_out(voice: str, rate: int, pitch: int, volume: int) -> tuple[str, ...]:
    """Why TTS training never sees such a record: () or some of "unseen_voice",
    "unseen_combination"."""
    reasons = []
    if voice in HELD_OUT_VOICES:
        reasons.append("unseen_voice")
    if control_levels(rate, pitch, volume) in HELD_OUT_COMBINATIONS:
        reasons.append("unseen_combination")
    return tuple(reasons)


def raw_held_out(raw: dict) -> tuple[str, ...]:
    """held_out() of a raw chorus_speech record; () for a dataset without its control fields
    (nothing of it is held out)."""
    if not all(k in raw for k in ("voice", "rate", "pitch", "volume")):
        return ()
    return held_out(field_text(raw, "voice"), int(raw["rate"]), int(raw["pitch"]),
                    int(raw["volume"]))
