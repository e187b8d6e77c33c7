"""CTC auxiliary objective: labels from the packed stream, loss vs brute-force alignments."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from chorus.model.ctc import CtcHead, CtcLabels, clip_transcripts, ctc_loss

PH = 99  # placeholder id
TEXT = 50  # text ids are 0..49; 60 stands for a special (<asr>, <transcript>, <eos>)


def _collapse(path):
    out, prev = [], None
    for c in path:
        if c != prev and c != 0:
            out.append(c)
        prev = c
    return tuple(out)


def _brute_force_nll(logits, num_frames, labels):
    """-log sum over every alignment of length num_frames that collapses to labels."""
    logp = jax.nn.log_softmax(np.asarray(logits, np.float64)[:num_frames], axis=-1)
    total = []
    for path in itertools.product(range(logp.shape[-1]), repeat=num_frames):
        if _collapse(path) == tuple(labels):
            total.append(sum(logp[t, c] for t, c in enumerate(path)))
    return -np.logaddexp.reduce(np.array(total))


def _stream():
    """Row 0: two ASR examples (2 and 3 frames) packed; row 1: one example, then padding."""
    # Row 0, segment 1: <asr> ph ph <tr> 5 7 <eos>; segment 2: <asr> ph ph ph <tr> 9 9 3 <eos>
    tokens0 = [60, PH, PH, 60, 5, 7, 60, 60, PH, PH, PH, 60, 9, 9, 3, 60]
    seg0 = [1] * 7 + [2] * 9
    # Row 1, segment 1: <asr> ph ph ph ph <tr> 4 <eos>, then padding
    tokens1 = [60, PH, PH, PH, PH, 60, 4, 60] + [0] * 8
    seg1 = [1] * 8 + [0] * 8
    tokens = np.array([tokens0, tokens1], np.int32)
    segments = np.array([seg0, seg1], np.int32)
    targets = np.concatenate([tokens[:, 1:], np.zeros((2, 1), np.int32)], axis=1)
    # Supervised: the transcript text and <eos> (targets after <transcript>).
    loss_mask = np.zeros(tokens.shape, np.float32)
    loss_mask[0, [3, 4, 5, 11, 12, 13, 14]] = 1
    loss_mask[1, [5, 6]] = 1
    frame_mask = np.zeros((2, 3, 4), bool)
    frame_mask[0, 0, :2] = True
    frame_mask[0, 1, :3] = True
    frame_mask[1, 0, :4] = True
    return tokens, targets, loss_mask, segments, frame_mask


def test_clip_transcripts_reads_each_clips_own_segment():
    tokens, targets, loss_mask, segments, frame_mask = _stream()
    lab = clip_transcripts(*map(jnp.asarray, (tokens, targets, loss_mask, segments, frame_mask)),
                           placeholder_id=PH, text_size=TEXT)
    np.testing.assert_array_equal(lab.clip_valid, [[True, True, False], [True, False, False]])
    np.testing.assert_array_equal(lab.lengths, [[2, 3, 0], [1, 0, 0]])
    np.testing.assert_array_equal(lab.labels[0, 0], [6, 8, 0, 0])  # text id + 1
    np.testing.assert_array_equal(lab.labels[0, 1], [10, 10, 4, 0])
    np.testing.assert_array_equal(lab.labels[1, 0], [5, 0, 0, 0])
    np.testing.assert_array_equal(lab.labels[0, 2], [0, 0, 0, 0])


def test_ctc_loss_matches_brute_force_enumeration():
    rng = np.random.default_rng(0)
    b, a, f, k = 2, 2, 4, 3
    logits = rng.normal(size=(b, a, f, k)).astype(np.float32)
    frame_mask = np.array([[[1, 1, 1, 1], [1, 1, 1, 0]], [[1, 1, 0, 0], [1, 1, 1, 1]]], bool)
    transcripts = [[[1, 2], [2, 2]], [[1], [2, 1, 2]]]
    labels = np.zeros((b, a, f), np.int32)
    lengths = np.zeros((b, a), np.int32)
    for i, j in np.ndindex(b, a):
        labels[i, j, :len(transcripts[i][j])] = transcripts[i][j]
        lengths[i, j] = len(transcripts[i][j])
    lab = CtcLabels(jnp.asarray(labels), jnp.asarray(lengths), jnp.ones((b, a), bool))
    loss, metrics = ctc_loss(jnp.asarray(logits), jnp.asarray(frame_mask), lab)
    nll = sum(_brute_force_nll(logits[i, j], frame_mask[i, j].sum(), transcripts[i][j])
              for i, j in np.ndindex(b, a))
    np.testing.assert_allclose(float(loss), nll / lengths.sum(), rtol=1e-5)
    assert float(metrics["ctc/clips"]) == 4 and float(metrics["ctc/infeasible"]) == 0


def test_ctc_loss_skips_and_counts_infeasible_clips():
    logits = jnp.zeros((1, 2, 3, 3))
    frame_mask = jnp.array([[[1, 1, 1], [1, 1, 0]]], bool)
    # Clip 1 has 2 frames for [1, 1], which needs a blank in between: 3 frames.
    lab = CtcLabels(jnp.array([[[1, 2, 0], [1, 1, 0]]]), jnp.array([[2, 2]]),
                    jnp.ones((1, 2), bool))
    loss, metrics = ctc_loss(logits, frame_mask, lab)
    only = _brute_force_nll(np.zeros((3, 3)), 3, [1, 2]) / 2
    np.testing.assert_allclose(float(loss), only, rtol=1e-5)
    assert float(metrics["ctc/infeasible"]) == 1 and float(metrics["ctc/clips"]) == 1


def test_ctc_gradients_through_the_head():
    rng = np.random.default_rng(1)
    frames = jnp.asarray(rng.normal(size=(1, 2, 4, 8)), jnp.float32)
    head = CtcHead(text_size=3)
    params = head.init(jax.random.key(0), frames)["params"]
    frame_mask = jnp.ones((1, 2, 4), bool)
    lab = CtcLabels(jnp.array([[[1, 3, 0, 0], [2, 0, 0, 0]]]), jnp.array([[2, 1]]),
                    jnp.ones((1, 2), bool))

    def f(frames):
        return ctc_loss(head.apply({"params": params}, frames), frame_mask, lab)[0]

    check_grads(f, (frames,), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)
    assert np.isfinite(float(f(frames)))


def _spelled(pieces, ids):
    """The reference spelling: the pieces joined, "▁" as a space, lowercased, characters
    outside CHARACTERS dropped, the leading space dropped."""
    from chorus.model.ctc import CHARACTERS

    text = "".join(pieces[i] for i in ids).replace("\u2581", " ").lower()
    text = "".join(c for c in text if c in CHARACTERS)
    return [CHARACTERS.index(c) + 1 for c in text.removeprefix(" ")]


def test_character_labels_spell_each_clips_pieces():
    from chorus.model.ctc import character_labels, character_table

    pieces = ["<unk>", "\u2581How", "\u2581many", "s", "\u2581", "7", ":", "\u2581Vera", "?"]
    table, lengths = character_table(pieces)
    rng = np.random.default_rng(0)
    b, a, f, width = 4, 3, 6, 40
    piece_ids = rng.integers(0, len(pieces), (b, a, f))
    counts = rng.integers(0, f + 1, (b, a))
    counts[0, 0] = 0  # an empty clip
    labels = np.where(np.arange(f) < counts[..., None], piece_ids + 1, 0).astype(np.int32)
    out = character_labels(CtcLabels(jnp.asarray(labels), jnp.asarray(counts),
                                     jnp.ones((b, a), bool)), table, lengths, width)
    for i, j in itertools.product(range(b), range(a)):
        ref = _spelled(pieces, piece_ids[i, j, :counts[i, j]])
        n = int(out.lengths[i, j])
        assert n == len(ref), (i, j)
        assert np.asarray(out.labels[i, j, :n]).tolist() == ref
        assert not np.asarray(out.labels[i, j, n:]).any()


def test_character_labels_of_a_cut_piece_buffer_are_infeasible():
    """A clip with more pieces than its buffer holds would be spelled short: its length is
    set past the width instead, so ctc_loss skips and counts it."""
    from chorus.model.ctc import character_labels, character_table

    table, lengths = character_table(["\u2581a", "b"])
    labels = CtcLabels(jnp.asarray([[[1, 2, 1]]], jnp.int32), jnp.asarray([[5]]),
                       jnp.ones((1, 1), bool))
    out = character_labels(labels, table, lengths, width=8)
    assert int(out.lengths[0, 0]) > 8
