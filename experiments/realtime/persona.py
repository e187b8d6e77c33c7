"""The persona card a realtime session speaks as: a JSON file, checked field by field.

    {"name": "Ada", "age": 34, "home": "Oslo", "job": "baker",
     "likes": ["chess", "rain"], "style": "plain", "voice": "en-gb+f3"}

The card's text in the prompt is `data_pipelines.personas.Persona.card()`, the form the
dialogue turns of the corpus were trained on; `voice` names the codec voice the answer is
spoken in.
"""

from __future__ import annotations

import dataclasses
import json

from data_pipelines.personas import ANSWERS, Persona

FIELDS = ("name", "age", "home", "job", "likes", "style", "voice")


class PersonaError(ValueError):
    """A bad card: the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class PersonaCard:
    name: str
    age: int
    home: str
    job: str
    likes: tuple[str, str]
    style: str
    voice: str

    def __post_init__(self):
        for field in ("name", "home", "job", "voice"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise PersonaError(f"persona.{field}: expected a non-empty string, got "
                                   f"{value!r}")
        if isinstance(self.age, bool) or not isinstance(self.age, int) or not 1 <= self.age <= 120:
            raise PersonaError(f"persona.age: expected an integer in 1..120, got {self.age!r}")
        likes = self.likes
        if (not isinstance(likes, (list, tuple)) or len(likes) != 2
                or not all(isinstance(x, str) and x.strip() for x in likes)):
            raise PersonaError(f"persona.likes: expected a list of 2 non-empty strings, got "
                               f"{likes!r}")
        object.__setattr__(self, "likes", tuple(likes))
        if self.style not in ANSWERS:
            raise PersonaError(f"persona.style: expected one of {sorted(ANSWERS)}, got "
                               f"{self.style!r}")

    def text(self) -> str:
        """The card as the corpus's dialogue prompts hold it."""
        return Persona(self.name, self.age, self.home, self.job, self.likes, self.style).card()

    @classmethod
    def from_dict(cls, data, source: str = "persona") -> PersonaCard:
        if not isinstance(data, dict):
            raise PersonaError(f"{source}: expected a JSON object with fields {list(FIELDS)}, "
                               f"got {type(data).__name__}")
        missing = [f for f in FIELDS if f not in data]
        unknown = sorted(set(data) - set(FIELDS))
        if missing or unknown:
            what = "missing field(s) " * bool(missing) + ", ".join(missing)
            what += "; " * bool(missing and unknown) + "unknown field(s) " * bool(unknown)
            raise PersonaError(f"{source}: expected fields {list(FIELDS)}, got "
                               f"{what}{', '.join(unknown)}")
        try:
            return cls(**{f: data[f] for f in FIELDS})
        except PersonaError as e:
            raise PersonaError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str) -> PersonaCard:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise PersonaError(f"{path}: no such persona card") from None
        except json.JSONDecodeError as e:
            raise PersonaError(f"{path}: expected JSON, got a parse error at line {e.lineno}: "
                               f"{e.msg}") from None
        return cls.from_dict(data, path)
