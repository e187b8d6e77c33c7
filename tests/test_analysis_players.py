"""Players and masking (chorus.analysis.players): a coalition keeps exactly its players'
spans and sets every other position to the baseline, on each axis."""

import numpy as np
import pytest

from chorus.analysis.players import (
    Players,
    audio_baseline,
    even_spans,
    mask_axis,
    mask_tokens,
    mel_bands,
    time_segments,
    token_spans,
)


def test_even_spans_cover_the_axis_in_near_equal_parts():
    spans = even_spans(103, 10)
    assert spans[0][0] == 0 and spans[-1][1] == 103
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert {b - a for a, b in spans} <= {10, 11}
    with pytest.raises(ValueError, match="count"):
        even_spans(5, 6)


def test_time_segments_are_named_by_their_seconds():
    p = time_segments(300, 3)
    assert p.names == ("0.00-1.00s", "1.00-2.00s", "2.00-3.00s")
    assert mel_bands(128, 4).spans[-1] == (96, 128)


def _reference_mask(features, keep, players, baseline, axis):
    """Position by position, straight from the definition."""
    out = np.repeat(features[None], len(keep), axis=0)
    for b, row in enumerate(keep):
        for i, (s, e) in enumerate(players.spans):
            if not row[i]:
                if axis == 0:
                    out[b, s:e] = baseline[s:e]
                else:
                    out[b, :, s:e] = baseline[:, s:e]
    return out


@pytest.mark.parametrize("axis", [0, 1])
def test_mask_axis_matches_the_definition(axis):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(37, 16)).astype(np.float32)
    players = time_segments(37, 5) if axis == 0 else mel_bands(16, 5)
    keep = rng.random((9, 5)) < 0.5
    base = audio_baseline("mean", feats.shape, -8.0)
    got = np.asarray(mask_axis(feats, keep, players, base))
    np.testing.assert_array_equal(got, _reference_mask(feats, keep, players, base, axis))


def test_positions_no_player_owns_are_always_kept():
    feats = np.arange(10.0).reshape(10, 1)
    players = Players("time", ((2, 4), (6, 8)), ("a", "b"))
    got = np.asarray(mask_axis(feats, np.zeros((1, 2), bool), players, np.zeros_like(feats)))
    np.testing.assert_array_equal(got[0, :, 0], [0, 1, 0, 0, 4, 5, 0, 0, 8, 9])


def test_baselines_are_the_normalization_mean_and_the_log_floor():
    assert np.all(audio_baseline("mean", (2, 3), -8.0) == -8.0)
    assert np.allclose(audio_baseline("silence", (2, 3), -8.0), np.log(1e-6))
    with pytest.raises(ValueError, match="baseline"):
        audio_baseline("noise", (2, 3), -8.0)


def test_mask_tokens_replaces_the_absent_words_tokens_only():
    tokens = np.array([7, 7, 11, 12, 13, 14, 15, 9])
    players = token_spans([np.array([11]), np.array([12, 13]), np.array([14, 15])],
                          ["a", "bc", "de"], offset=2)
    got = np.asarray(mask_tokens(tokens, np.array([[True, False, True], [False, True, False]]),
                                 players, 0))
    np.testing.assert_array_equal(got, [[7, 7, 11, 0, 0, 14, 15, 9],
                                        [7, 7, 0, 12, 13, 0, 0, 9]])


def test_bad_players_are_named():
    with pytest.raises(ValueError, match="spans\\[1\\]"):
        Players("time", ((0, 3), (2, 5)), ("a", "b"))
    with pytest.raises(ValueError, match="axis"):
        Players("space", ((0, 1), (1, 2)), ("a", "b"))
    with pytest.raises(ValueError, match="past the time axis"):
        time_segments(20, 2).index_of(10)
    with pytest.raises(ValueError, match="keep"):
        mask_axis(np.zeros((10, 2)), np.ones((3, 4), bool), time_segments(10, 2),
                  np.zeros((10, 2)))
