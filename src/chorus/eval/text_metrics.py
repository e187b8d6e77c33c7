"""Corpus-level WER / CER on the one documented normalization (data_pipelines.normalize)."""

from __future__ import annotations

from collections.abc import Sequence

from data_pipelines.normalize import normalize_text


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """{"wer", "cer"}: total edit errors / total reference words (characters), via jiwer.

    Both sides are normalized with `normalize_text` first; an utterance whose normalized
    reference is empty is skipped (its errors are undefined) and counted.
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"error_rates: expected as many hypotheses as references, got "
                         f"{len(hypotheses)} for {len(references)}")
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
