"""What a TTS prompt asks for, known exactly because the corpus was synthesized from it.

    target = SpeechTarget.from_raw(raw_record)      # a `chorus_speech` TFDS record dict
    target.to_json() / SpeechTarget.from_json(s)   # the RL task's reference string
    spans("turn on (softly) the light")             # [Span(None, "turn on"),
                                                    #  Span("(softly)", "the light")]

The RL task's references are `to_json()` strings, so every TTS reward reads the same target
(text, voice, eSpeak rate / pitch / volume, the inline tag) from the prompt it scores.
"""

from __future__ import annotations

import dataclasses
import json
import re

from data_pipelines.corpus_plan import INLINE_TAGS
from data_pipelines.records import field_text

_TAG = re.compile(r"\([a-z][a-z ]*\)")


@dataclasses.dataclass(frozen=True)
class Span:
    tag: str | None  # the inline direction in force ("(softly)"), None before any
    text: str


class TagError(ValueError):
    """A text holds an inline direction the corpus (and so the model) never had."""


def spans(tagged_text: str, known: tuple[str, ...] = INLINE_TAGS) -> list[Span]:
    """The text split at its inline directions: each tag holds until the next one. An unknown
    tag (a parenthesized lower-case word group not in `known`) raises TagError naming it."""
    out, tag, pos = [], None, 0
    for m in _TAG.finditer(tagged_text):
        if m.group() not in known:
            raise TagError(f"inline direction {m.group()!r}: not one the model was trained on; "
                           f"expected one of {list(known)}")
        piece = tagged_text[pos:m.start()].strip()
        if piece:
            out.append(Span(tag, piece))
        tag, pos = m.group(), m.end()
    piece = tagged_text[pos:].strip()
    if piece:
        out.append(Span(tag, piece))
    return out


def plain_text(tagged_text: str) -> str:
    """The words that are spoken: the text without its inline directions."""
    return " ".join(s.text for s in spans(tagged_text))


@dataclasses.dataclass(frozen=True)
class SpeechTarget:
    id: str
    text: str  # what is said (no tags)
    tagged_text: str  # the TTS input text (inline tags included; = text when untagged)
    instruction: str
    voice: str  # the eSpeak NG catalog voice (data_pipelines.voices)
    speaker_id: int
    rate: int  # eSpeak words per minute of the untagged speech
    pitch: int  # eSpeak pitch, 0-99
    volume: int  # eSpeak amplitude, 0-200

    @classmethod
    def from_raw(cls, raw: dict) -> SpeechTarget:
        text = field_text(raw, "text")
        ints = {}
        for k in ("speaker_id", "rate", "pitch", "volume"):
            if k not in raw:
                raise KeyError(f"record {field_text(raw, 'id')!r}: expected the int field "
                               f"{k!r} of a chorus_speech record, got keys {sorted(raw)}")
            ints[k] = int(raw[k])
        return cls(id=field_text(raw, "id"), text=text,
                   tagged_text=field_text(raw, "tagged_text") or text,
                   instruction=field_text(raw, "instruction"), voice=field_text(raw, "voice"),
                   **ints)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SpeechTarget:
        try:
            data = json.loads(text)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"SpeechTarget.from_json: expected the JSON of a SpeechTarget "
                             f"(fields {[f.name for f in dataclasses.fields(cls)]}), got "
                             f"{text[:80]!r}: {e}") from None

    @property
    def tag(self) -> str | None:
        """The first inline direction of the text, None when untagged."""
        return next((s.tag for s in spans(self.tagged_text) if s.tag), None)
