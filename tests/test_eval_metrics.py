import pytest

from chorus.eval.text_metrics import error_rates


def _levenshtein(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def test_error_rates_match_a_plain_edit_distance_reference():
    refs = ["Turn on the lights.", "It is 5 o'clock", "hello world"]
    hyps = ["turn the light", "it is five o'clock", ""]
    got = error_rates(refs, hyps)
    # Normalization: lower-case, punctuation stripped, digits spelled out.
    norm_refs = ["turn on the lights", "it is five oclock", "hello world"]
    norm_hyps = ["turn the light", "it is five oclock", ""]
    pairs = list(zip(norm_refs, norm_hyps, strict=True))
    words = sum(_levenshtein(r.split(), h.split()) for r, h in pairs)
    chars = sum(_levenshtein(r, h) for r, h in pairs)
    assert got["wer"] == pytest.approx(words / sum(len(r.split()) for r in norm_refs))
    assert got["cer"] == pytest.approx(chars / sum(len(r) for r in norm_refs))
    assert got["exact_match"] == pytest.approx(1 / 3)


def test_error_rates_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="expected as many hypotheses"):
        error_rates(["a"], [])
