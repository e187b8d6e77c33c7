"""CTC decoding (chorus.decoding.ctc) against references: greedy vs a per-frame loop, prefix
beam search vs brute force over every alignment, scores vs optax.ctc_loss."""

import itertools
from collections import defaultdict

import jax
import numpy as np
import pytest

from chorus.decoding.ctc import PAD, ctc_greedy, ctc_prefix_beam_search, ctc_sequence_logprob


def _naive_greedy(logits, mask):
    """Per frame: argmax (blank on masked frames); a token starts where the class changes to a
    non-blank and ends on the last frame of that run."""
    ids, starts, ends, prev = [], [], [], 0
    for t in range(logits.shape[0]):
        c = int(np.argmax(logits[t])) if mask[t] else 0
        if c != 0 and c != prev:
            ids.append(c - 1)
            starts.append(t)
            ends.append(t)
        elif c != 0:
            ends[-1] = t
        prev = c
    return ids, starts, ends


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def _brute_force(log_probs):
    """{text ids: log p} summed over every alignment path of all frames."""
    f, c = log_probs.shape
    total = defaultdict(lambda: -np.inf)
    for path in itertools.product(range(c), repeat=f):
        out = _collapse(path)
        score = sum(log_probs[t, k] for t, k in enumerate(path))
        total[out] = np.logaddexp(total[out], score)
    return dict(total)


def _collapse(path) -> tuple:
    """The text ids a path of classes spells: repeats merged, blanks (0) dropped."""
    out, prev = [], 0
    for k in path:
        if k != 0 and k != prev:
            out.append(k - 1)
        prev = k
    return tuple(out)


def _peaky(rng, path, num_classes, peak=8.0):
    logits = rng.normal(size=(len(path), num_classes))
    logits[np.arange(len(path)), path] += peak
    return logits


def test_greedy_matches_a_per_frame_loop():
    rng = np.random.default_rng(0)
    b, f, c = 6, 14, 4  # few classes: many repeats and blanks
    logits = rng.normal(size=(b, f, c)).astype(np.float32)
    logits[0, 3:7, 2] += 9.0  # a long run of one label
    logits[1] = _peaky(rng, [0, 1, 1, 0, 1, 2, 2, 3, 0, 0, 3, 3, 1, 1], c)  # repeats split by 0
    mask = np.ones((b, f), bool)
    mask[2, 9:] = False  # right padding
    mask[3, :] = False  # an empty row
    mask[4, 5] = False  # a masked frame inside: ends the run like a blank
    logits[4, 3:8, 1] += 9.0
    got = ctc_greedy(logits, mask)
    for i in range(b):
        ids, starts, ends = _naive_greedy(logits[i], mask[i])
        n = int(got.lengths[i])
        assert n == len(ids)
        assert np.asarray(got.ids[i, :n]).tolist() == ids
        assert np.asarray(got.starts[i, :n]).tolist() == starts
        assert np.asarray(got.ends[i, :n]).tolist() == ends
        for field in (got.ids, got.starts, got.ends):
            assert (np.asarray(field[i, n:]) == PAD).all()
    assert int(got.lengths[3]) == 0
    assert np.asarray(got.ids[4, :2]).tolist() == [0, 0]  # split by the masked frame


def test_greedy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"frame_mask \[B, F\]"):
        ctc_greedy(np.zeros((2, 5, 3)), np.ones((2, 4), bool))


@pytest.mark.parametrize("frames,classes,seed", [(4, 3, 0), (5, 3, 1), (3, 4, 2), (4, 2, 3)])
def test_prefix_beam_search_is_exact_against_brute_force(frames, classes, seed):
    rng = np.random.default_rng(seed)
    lp = _log_softmax(rng.normal(size=(frames, classes)) * 1.5)
    truth = _brute_force(lp)
    reachable = sum((classes - 1) ** n for n in range(frames + 1))
    nbest = ctc_prefix_beam_search(lp, beam=reachable)
    assert len(nbest) == len(truth)
    assert {ids for ids, _ in nbest} == set(truth)
    for ids, score in nbest:
        assert score == pytest.approx(truth[ids], abs=1e-12)
    scores = [s for _, s in nbest]
    assert scores == sorted(scores, reverse=True)
    assert nbest[0][0] == max(truth, key=truth.get)  # the most probable transcript
    assert np.logaddexp.reduce(scores) == pytest.approx(0.0, abs=1e-12)  # all mass


def test_prefix_beam_search_finds_the_best_transcript_where_the_best_path_does_not():
    # The frame-wise best path is blank blank (the empty transcript, p = 0.36), but "a" sums
    # three alignments (b a, a b, a a): 0.24 + 0.24 + 0.16 = 0.64.
    p = np.array([[0.6, 0.4], [0.6, 0.4]])
    lp = np.log(p)
    greedy = ctc_greedy(lp[None], np.ones((1, 2), bool))
    assert int(greedy.lengths[0]) == 0
    nbest = ctc_prefix_beam_search(lp, beam=4)
    assert nbest[0][0] == (0,) and nbest[0][1] == pytest.approx(np.log(0.64), abs=1e-12)
    assert nbest[1][0] == () and nbest[1][1] == pytest.approx(np.log(0.36), abs=1e-12)


def test_beam_one_equals_greedy_on_a_peaky_input():
    rng = np.random.default_rng(4)
    path = [0, 3, 3, 0, 3, 5, 0, 0, 1, 1, 1, 0, 2, 4, 4, 0]
    logits = _peaky(rng, path, 7)
    greedy = ctc_greedy(logits[None].astype(np.float32), np.ones((1, len(path)), bool))
    ids = tuple(np.asarray(greedy.ids[0, :int(greedy.lengths[0])]).tolist())
    assert ids == (2, 2, 4, 0, 1, 3)
    (best, _), = ctc_prefix_beam_search(_log_softmax(logits), beam=1)
    assert best == ids


def _optax_scores(lp, seqs, pad_frames=3):
    """-optax.ctc_loss of each label sequence over lp (+ masked padding frames), float64."""
    frames, classes = lp.shape
    labels = np.zeros((len(seqs), max(1, max(len(s) for s in seqs))), np.int64)
    for i, s in enumerate(seqs):
        labels[i, :len(s)] = s
    padded = np.concatenate([lp, np.zeros((pad_frames, classes))])  # must not count
    batch = np.broadcast_to(padded, (len(seqs), *padded.shape))
    mask = np.broadcast_to(np.arange(frames + pad_frames) < frames, batch.shape[:2])
    with jax.enable_x64(True):
        out = ctc_sequence_logprob(batch, mask, labels, np.array([len(s) for s in seqs]))
        assert out.dtype == np.float64
        return np.asarray(out)


def test_scores_match_optax_ctc_loss():
    rng = np.random.default_rng(5)
    # exact search (beam >= every reachable prefix): every score is log p(ids | x)
    lp = _log_softmax(rng.normal(size=(6, 4)))
    nbest = ctc_prefix_beam_search(lp, beam=sum(3 ** n for n in range(7)))
    np.testing.assert_allclose([s for _, s in nbest], _optax_scores(lp, [i for i, _ in nbest]),
                               atol=1e-6, rtol=0)
    # pruned (beam 4 of thousands of prefixes): a lower bound of log p, close for the best
    lp = _log_softmax(rng.normal(size=(9, 6)))
    nbest = ctc_prefix_beam_search(lp, beam=4)
    ref = _optax_scores(lp, [i for i, _ in nbest])
    assert all(s <= r + 1e-9 for (_, s), r in zip(nbest, ref, strict=True))
    assert any(s < r - 1e-3 for (_, s), r in zip(nbest, ref, strict=True))  # pruning shows
    # the wrapper itself against brute force on a tiny case
    small = _log_softmax(rng.normal(size=(4, 3)))
    truth = _brute_force(small)
    seqs = sorted(truth)
    np.testing.assert_allclose(_optax_scores(small, seqs, pad_frames=0),
                               [truth[s] for s in seqs], atol=1e-6, rtol=0)


def test_beam_search_rejects_bad_input():
    with pytest.raises(ValueError, match=r"log_probs \[F, C\]"):
        ctc_prefix_beam_search(np.zeros((3,)), beam=2)
    with pytest.raises(ValueError, match="beam: expected an int >= 1, got 0"):
        ctc_prefix_beam_search(np.zeros((3, 4)), beam=0)


def _brute_force_alignment(log_probs, labels):
    """The best path (over every path of all frames) that collapses to `labels`: (its log p,
    each label's first and last frame)."""
    f, c = log_probs.shape
    best, best_path = -np.inf, None
    for path in itertools.product(range(c), repeat=f):
        if _collapse(path) == tuple(labels):
            score = sum(log_probs[t, k] for t, k in enumerate(path))
            if score > best:
                best, best_path = score, path
    starts, ends, j, prev = [], [], -1, 0
    for t, k in enumerate(best_path):
        if k != 0 and k != prev:
            j += 1
            starts.append(t)
            ends.append(t)
        elif k != 0:
            ends[j] = t
        prev = k
    return best, starts, ends


@pytest.mark.parametrize("frames,classes,labels", [(5, 3, [0, 1]), (6, 3, [1, 1]),
                                                   (6, 4, [2, 0, 2]), (4, 3, [0]),
                                                   (5, 4, [1, 1, 2])])
def test_forced_alignment_is_the_best_path_that_spells_the_labels(frames, classes, labels):
    from chorus.decoding.ctc import ctc_forced_align

    rng = np.random.default_rng(frames * 10 + classes + len(labels))
    for _ in range(3):
        lp = _log_softmax(rng.normal(0, 2, (frames, classes)))
        want, want_starts, want_ends = _brute_force_alignment(lp, labels)
        starts, ends, score = ctc_forced_align(lp, labels)
        assert score == pytest.approx(want, abs=1e-12)  # the same sums in float64
        assert starts.tolist() == want_starts and ends.tolist() == want_ends


def test_forced_alignment_refuses_what_the_frames_cannot_hold():
    from chorus.decoding.ctc import ctc_forced_align

    lp = _log_softmax(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="need at least 4 frames, got 3"):
        ctc_forced_align(lp, [1, 1, 2])  # the repeat needs a blank between its copies
    with pytest.raises(ValueError, match="text ids in"):
        ctc_forced_align(lp, [3])
    starts, ends, score = ctc_forced_align(lp, [])
    assert starts.size == 0 and score == pytest.approx(3 * np.log(0.25))
