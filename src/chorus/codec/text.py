"""Character targets of the tokenizer's CTC head: blank, then the characters that the one text
normalization (`chorus.audio.text.normalize_text`: lower-case letters and single spaces)
can produce."""

from __future__ import annotations

import string

import numpy as np

from chorus.audio.text import normalize_text

BLANK = 0
ALPHABET = " " + string.ascii_lowercase
VOCAB_SIZE = len(ALPHABET) + 1  # + blank
_INDEX = {ch: i + 1 for i, ch in enumerate(ALPHABET)}


def encode(text: str) -> np.ndarray:
    return np.asarray([_INDEX[ch] for ch in normalize_text(text)], np.int32)


def decode(ids) -> str:
    return "".join(ALPHABET[i - 1] for i in ids if 0 < i <= len(ALPHABET))


def ctc_greedy(frame_ids: np.ndarray) -> str:
    """Best path: merge repeats, drop blanks."""
    ids = np.asarray(frame_ids)
    if ids.size == 0:
        return ""
    keep = np.concatenate([[True], ids[1:] != ids[:-1]]) & (ids != BLANK)
    return decode(ids[keep]).strip()
