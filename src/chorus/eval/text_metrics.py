"""WER / CER on the one documented normalization (`chorus.audio.text.normalize_text`).

    error_rates(refs, hyps)                    corpus-level: total edits / total reference units
    utterance_error_rates(refs, hyps, "cer")   one rate per utterance (RL rewards, paired tests)

Evaluation tables, RL rewards and the codec's content check all call these, so a "CER" means
the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from chorus.audio.text import normalize_text

KINDS = ("wer", "cer")


def _check_lengths(references: Sequence[str], hypotheses: Sequence[str], where: str) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{where}: expected as many hypotheses as references, got "
                         f"{len(hypotheses)} for {len(references)}")


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """{"wer", "cer", "exact_match", ...}: total edit errors / total reference words
    (characters), via jiwer.

    Both sides are normalized with `normalize_text` first; an utterance whose normalized
    reference is empty is skipped (its errors are undefined) and counted.
    """
    import jiwer

    _check_lengths(references, hypotheses, "error_rates")
    refs, hyps, skipped = [], [], 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref_n = normalize_text(ref)
        if not ref_n:
            skipped += 1
            continue
        refs.append(ref_n)
        hyps.append(normalize_text(hyp))
    if not refs:
        raise ValueError("error_rates: no reference with words after normalization")
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return {"wer": float(words.wer), "cer": float(chars.cer), "utterances": len(refs),
            "skipped_empty_references": skipped,
            "exact_match": sum(r == h for r, h in zip(refs, hyps, strict=True)) / len(refs)}


def utterance_error_rates(references: Sequence[str], hypotheses: Sequence[str], kind: str,
                          normalize: Callable[[str], str] | None = None) -> np.ndarray:
    """Per-utterance WER or CER [N] after `normalize` (default `normalize_text`).

    An empty normalized reference scores 0 against an empty hypothesis and 1 otherwise, so the
    rate stays bounded (jiwer would count insertions against nothing).
    """
    import jiwer

    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    _check_lengths(references, hypotheses, "utterance_error_rates")
    norm = normalize or normalize_text
    rate = jiwer.cer if kind == "cer" else jiwer.wer
    out = []
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = norm(ref), norm(hyp)
        out.append((0.0 if not h else 1.0) if not r else float(rate(r, h)))
    return np.asarray(out, np.float64)
