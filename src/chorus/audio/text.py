"""The one text normalization that WER / CER are computed on.

    normalize_text("At 7:45, Dr. O'Brien said: 'GO!'")  ->  "at seven forty five dr obrien said go"

Rules, in order:
  1. lowercase;
  2. apostrophes are deleted (so "don't" == "dont" and LibriSpeech's DON'T matches);
  3. every run of digits becomes English number words (so "7:45" -> "seven forty five",
     "2024" -> "two thousand twenty four"; runs longer than 12 digits are read digit by digit);
  4. every other non-alphanumeric character becomes a space;
  5. whitespace runs collapse to one space, ends stripped.
Applying it twice changes nothing (tested).
"""

from __future__ import annotations

import re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_MAX_NUMBER_DIGITS = 12


def number_to_words(n: int) -> str:
    """0 <= n < 10**12 -> "three hundred forty two" (no "and", no hyphens)."""
    if not 0 <= n < 10**12:
        raise ValueError(f"number_to_words: expected 0 <= n < 10**12, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{number_to_words(high)} {name}" + (
                f" {number_to_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def _digits_to_words(match: re.Match) -> str:
    digits = match.group(0)
    if len(digits) > _MAX_NUMBER_DIGITS:
        return " " + " ".join(_ONES[int(d)] for d in digits) + " "
    return f" {number_to_words(int(digits))} "


def normalize_text(text: str) -> str:
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = re.sub(r"[0-9]+", _digits_to_words, text)
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(text.split())
