"""Subtitles from timed text: SRT cues from words or from segments.

    cues = cues_from_words([{"word": "turn", "start": 0.1, "end": 0.4}, ...])
    cues = cues_from_segments([(0.0, 5.2, "turn off the lights"), ...])   # no word times
    text = to_srt(cues)

Cues are packed greedily from words: a new cue starts when the next word would make the cue
longer than `max_chars` characters or `max_seconds` from its first word's start to the word's
end. Segments (a long-form window's kept span and text) are split into words first, each
word given the share of the segment's time that its characters have of the text, so one
packer serves both; with word timestamps (from the CTC alignment) the cues follow speech.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal

from chorus.config import check


@dataclasses.dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str


def format_timestamp(seconds: float) -> str:
    """SRT's HH:MM:SS,mmm, rounded half up to the millisecond on the value's decimal form
    (59.9995 -> 00:01:00,000); hours are not wrapped at 24."""
    check(math.isfinite(seconds) and seconds >= 0, "timestamp", "finite seconds >= 0", seconds)
    ms = int(Decimal(repr(float(seconds))).quantize(Decimal("0.001"), ROUND_HALF_UP) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def to_srt(cues: Iterable[Cue]) -> str:
    """Numbered SRT blocks (index, start --> end, text, blank line); empty cues dropped."""
    blocks = []
    for cue in cues:
        if cue.text.strip():
            blocks.append(f"{len(blocks) + 1}\n{format_timestamp(cue.start)} --> "
                          f"{format_timestamp(cue.end)}\n{cue.text.strip()}\n")
    return "\n".join(blocks) + ("\n" if blocks else "")


def cues_from_words(words: Sequence[Mapping], max_seconds: float = 6.0,
                    max_chars: int = 84) -> list[Cue]:
    """Cues of consecutive words ({"word", "start", "end"} in seconds, in time order); a word
    longer than the limits on its own is a cue of its own."""
    check(max_seconds > 0, "max_seconds", "> 0", max_seconds)
    check(max_chars >= 1, "max_chars", ">= 1", max_chars)
    cues, group = [], []

    def close():
        if group:
            cues.append(Cue(group[0]["start"], group[-1]["end"],
                            " ".join(w["word"] for w in group)))

    for w in words:
        text = " ".join([*(g["word"] for g in group), w["word"]])
        if group and (len(text) > max_chars or w["end"] - group[0]["start"] > max_seconds):
            close()
            group = []
        group.append(w)
    close()
    return cues


def segment_words(start: float, end: float, text: str) -> list[dict]:
    """A segment's words, each timed by its characters' share of the text."""
    words, pos = [], 0
    total = max(len(text), 1)
    for word in text.split():
        lo = text.index(word, pos)
        pos = lo + len(word)
        words.append({"word": word, "start": start + (end - start) * lo / total,
                      "end": start + (end - start) * pos / total})
    return words


def cues_from_segments(segments: Iterable, max_seconds: float = 6.0,
                       max_chars: int = 84) -> list[Cue]:
    """Cues of timed segments ((start, end, text) tuples or objects with those fields)."""
    words = []
    for seg in segments:
        start, end, text = seg if isinstance(seg, tuple) else (seg.start, seg.end, seg.text)
        words += segment_words(start, end, text)
    return cues_from_words(words, max_seconds, max_chars)
