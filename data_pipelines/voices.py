"""The catalog of synthetic voices: English accents of eSpeak NG x voice variants.

A voice is named the way eSpeak selects it, `"<accent>+<variant>"` (e.g. `"en-gb-scotland+f3"`)
or just `"<accent>"` for the accent's default voice.
Its speaker id is its index in `VOICES`, so ids are stable as long as the lists below only grow
at the end.
"""

from __future__ import annotations

import dataclasses

# eSpeak NG voice name -> accent description (used in TTS instructions).
ACCENTS: dict[str, str] = {
    "en-us": "american",
    "en-gb": "british",
    "en-gb-scotland": "scottish",
    "en-gb-x-rp": "received pronunciation",
    "en-gb-x-gbclan": "lancashire",
    "en-gb-x-gbcwmd": "west midlands",
    "en-029": "caribbean",
    "en-us-nyc": "new york",
}

# Accents whose eSpeak voice file is named differently from the accent code.
_ESPEAK_FILE = {"en-gb": "en"}

# eSpeak NG variant -> perceived gender (used in TTS instructions).
# "" is the accent's own default voice.
VARIANTS: dict[str, str] = {
    "": "male",
    "f1": "female", "f2": "female", "f3": "female", "f4": "female", "f5": "female",
    "m1": "male", "m2": "male", "m3": "male", "m4": "male", "m5": "male", "m6": "male",
    "m7": "male",
    "croak": "male", "whisper": "male", "whisperf": "female",
    "klatt": "male", "klatt3": "male", "Annie": "female", "Andy": "male", "belinda": "female",
}

# Variants whose whole character is a voice quality, said in instructions.
_QUALITY = {"croak": "croaky", "whisper": "whispering", "whisperf": "whispering",
            "klatt": "robotic", "klatt3": "robotic"}


@dataclasses.dataclass(frozen=True)
class Voice:
    name: str  # our name: "<accent>[+<variant>]"
    accent: str
    variant: str
    speaker_id: int

    @property
    def gender(self) -> str:
        return VARIANTS[self.variant]

    @property
    def quality(self) -> str | None:
        return _QUALITY.get(self.variant)

    @property
    def espeak_name(self) -> str:
        """The name espeak_SetVoiceByName resolves (voice file [+ variant])."""
        base = _ESPEAK_FILE.get(self.accent, self.accent)
        return f"{base}+{self.variant}" if self.variant else base

    def describe(self) -> str:
        """E.g. "a scottish female voice" or "a croaky american male voice"."""
        words = [w for w in (self.quality, ACCENTS[self.accent], self.gender) if w]
        return "a " + " ".join(words) + " voice"


def _voice_name(accent: str, variant: str) -> str:
    return f"{accent}+{variant}" if variant else accent


VOICES: tuple[Voice, ...] = tuple(
    Voice(_voice_name(accent, variant), accent, variant, i)
    for i, (accent, variant) in enumerate((a, v) for a in ACCENTS for v in VARIANTS)
)
_BY_NAME = {v.name: v for v in VOICES}


def get_voice(name: str) -> Voice:
    """The catalog entry for `name` (`"en-us"`, `"en-gb+f3"`, ...)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"voice: expected one of the {len(VOICES)} catalog voices "
                         f"(<accent>[+<variant>], accents {sorted(ACCENTS)}, variants "
                         f"{sorted(VARIANTS)}), got {name!r}") from None
