"""Character targets of the tokenizer's CTC head: blank, space, apostrophe, a-z, 0-9."""

from __future__ import annotations

import re
import string

import numpy as np

BLANK = 0
ALPHABET = " '" + string.ascii_lowercase + string.digits
VOCAB_SIZE = len(ALPHABET) + 1  # + blank
_INDEX = {ch: i + 1 for i, ch in enumerate(ALPHABET)}


def normalize(text: str) -> str:
    """Lower-cases, turns other characters into spaces, collapses whitespace."""
    kept = "".join(ch if ch in _INDEX else " " for ch in text.lower())
    return re.sub(r"\s+", " ", kept).strip()


def encode(text: str) -> np.ndarray:
    return np.asarray([_INDEX[ch] for ch in normalize(text)], np.int32)


def decode(ids) -> str:
    return "".join(ALPHABET[i - 1] for i in ids if 0 < i <= len(ALPHABET))


def ctc_greedy(frame_ids: np.ndarray) -> str:
    """Best path: merge repeats, drop blanks."""
    ids = np.asarray(frame_ids)
    if ids.size == 0:
        return ""
    keep = np.concatenate([[True], ids[1:] != ids[:-1]]) & (ids != BLANK)
    return decode(ids[keep]).strip()


def character_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus CER: total character edits / total reference characters (after normalize)."""
    import jiwer

    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    if not refs or not any(refs):
        raise ValueError("character_error_rate: expected non-empty references, got none")
    return float(jiwer.cer(refs, hyps))
