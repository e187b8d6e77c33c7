"""Decoding a CTC head: best-path greedy (with frame spans), prefix beam search, and the
log-likelihood of a given transcript.

Classes follow `chorus.model.ctc`: class 0 = blank, class c = text id c - 1. Everything here
is model-agnostic: it reads per-frame logits (or log-probabilities) and a frame mask.

    greedy = ctc_greedy(logits, frame_mask)            # jitted; ids, lengths, frame spans
    nbest  = ctc_prefix_beam_search(log_probs, beam)   # one utterance, numpy float64
    logp   = ctc_sequence_logprob(logits, frame_mask, labels, label_lengths)  # optax

Greedy runs in JAX with fixed shapes so the argmax happens where the logits are (a [B, F,
text_size + 1] array need not leave the device) and one compile serves every batch of a size.
The beam search is host numpy: its prefixes are variable-length Python tuples, merged by key.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

BLANK = 0
PAD = -1  # the ids / spans after a row's length in CtcGreedy


@flax.struct.dataclass
class CtcGreedy:
    """The best-path alignment, collapsed: token k of row b is text id ids[b, k], emitted on
    frames starts[b, k] ..= ends[b, k] (its run of identical argmax frames)."""

    ids: jax.Array  # [B, F] int32 text ids (class - 1), PAD after lengths[b]
    lengths: jax.Array  # [B] int32 emitted tokens
    starts: jax.Array  # [B, F] int32 first frame of each token, PAD after lengths[b]
    ends: jax.Array  # [B, F] int32 last frame of each token (inclusive), PAD after lengths[b]

    @property
    def tokens(self) -> jax.Array:
        """ids under DecodeResult's name, so code that reads .tokens / .lengths reads either."""
        return self.ids


@jax.jit
def ctc_greedy(logits, frame_mask) -> CtcGreedy:
    """Best path: argmax per frame, collapse repeats, drop blanks.

    logits [B, F, C] (or log-probabilities; only the argmax matters), frame_mask [B, F] bool.
    Masked frames count as blanks (so they end a run, like a blank frame does).
    """
    if logits.ndim != 3 or frame_mask.shape != logits.shape[:2]:
        raise ValueError(f"ctc_greedy: expected logits [B, F, C] and frame_mask [B, F], got "
                         f"{logits.shape} and {frame_mask.shape}")
    b, f, _ = logits.shape
    best = jnp.where(frame_mask, jnp.argmax(logits, axis=-1), BLANK).astype(jnp.int32)
    prev = jnp.pad(best, ((0, 0), (1, 0)), constant_values=BLANK)[:, :-1]
    nxt = jnp.pad(best, ((0, 0), (0, 1)), constant_values=BLANK)[:, 1:]
    starts_here = (best != BLANK) & (best != prev)  # a new token's first frame
    ends_here = (best != BLANK) & (best != nxt)  # a token's last frame
    slot = jnp.cumsum(starts_here, axis=1) - 1  # token index of each frame's run
    rows = jnp.arange(b)[:, None]
    frames = jnp.broadcast_to(jnp.arange(f, dtype=jnp.int32), (b, f))
    pad = jnp.full((b, f), PAD, jnp.int32)
    start_dest = jnp.where(starts_here, slot, f)  # f: dropped
    end_dest = jnp.where(ends_here, slot, f)
    ids = pad.at[rows, start_dest].set(best - 1, mode="drop")
    starts = pad.at[rows, start_dest].set(frames, mode="drop")
    ends = pad.at[rows, end_dest].set(frames, mode="drop")
    return CtcGreedy(ids, starts_here.sum(axis=1).astype(jnp.int32), starts, ends)


def ctc_prefix_beam_search(log_probs, beam: int) -> list[tuple[tuple[int, ...], float]]:
    """The `beam` best transcripts of one utterance by CTC prefix beam search (Graves 2012,
    Hannun et al. 2014), best first: [(text ids, log p(ids | x)), ...].

    log_probs [F, C]: per-frame log-probabilities of the valid frames only (class 0 = blank).
    Each prefix keeps the probability of all alignments of the frames so far that collapse to
    it, split by whether they end in a blank (needed to tell a repeat "a a" from "aa").
    Pruning to `beam` prefixes per frame is the only approximation: the search is exact once
    beam >= the number of prefixes reachable; with pruning a score is a lower bound (the mass
    of alignments through pruned prefixes is lost). Extensions are scored for all classes at
    once; only the best `beam` of them become tuples.
    """
    lp = np.asarray(log_probs, np.float64)
    if lp.ndim != 2 or lp.shape[1] < 2:
        raise ValueError(f"ctc_prefix_beam_search: expected log_probs [F, C] with C >= 2, got "
                         f"shape {lp.shape}")
    if not isinstance(beam, int | np.integer) or beam < 1:
        raise ValueError(f"ctc_prefix_beam_search beam: expected an int >= 1, got {beam!r}")
    neg = -np.inf
    prefixes: list[tuple[int, ...]] = [()]
    p_b, p_nb = np.array([0.0]), np.array([neg])  # log p, ending in blank / in a label
    for t in range(lp.shape[0]):
        row = lp[t]
        total = np.logaddexp(p_b, p_nb)
        last = np.array([p[-1] + 1 if p else BLANK for p in prefixes])  # class of last label
        # staying on the prefix: a blank, or a repeat of its last label (collapsed)
        new_b = total + row[BLANK]
        new_nb = np.where(last != BLANK, p_nb + row[last], neg)
        # extending by class c: after a blank-ending path only, when c repeats the last label
        ext = total[:, None] + row[None, :]
        ext[:, BLANK] = neg
        has_last = last != BLANK
        ext[has_last, last[has_last]] = p_b[has_last] + row[last[has_last]]
        # an extension that is already a kept prefix merges into it
        index = {p: i for i, p in enumerate(prefixes)}
        for j, p in enumerate(prefixes):
            parent = index.get(p[:-1]) if p else None
            if parent is not None:
                c = p[-1] + 1
                new_nb[j] = np.logaddexp(new_nb[j], ext[parent, c])
                ext[parent, c] = neg
        kept = np.logaddexp(new_b, new_nb)
        flat = ext.ravel()
        k = min(beam, flat.size)
        top = np.argpartition(-flat, k - 1)[:k]
        top = top[np.isfinite(flat[top])]
        scores = np.concatenate([kept, flat[top]])
        order = np.argsort(-scores, kind="stable")[:beam]
        n_kept = len(prefixes)
        next_prefixes, next_b, next_nb = [], [], []
        for o in order:
            if not np.isfinite(scores[o]):
                continue
            if o < n_kept:
                next_prefixes.append(prefixes[o])
                next_b.append(new_b[o])
                next_nb.append(new_nb[o])
            else:
                i, c = divmod(int(top[o - n_kept]), lp.shape[1])
                next_prefixes.append(prefixes[i] + (c - 1,))
                next_b.append(neg)
                next_nb.append(flat[top[o - n_kept]])
        prefixes, p_b, p_nb = next_prefixes, np.array(next_b), np.array(next_nb)
    scores = np.logaddexp(p_b, p_nb)
    order = np.argsort(-scores, kind="stable")
    return [(prefixes[i], float(scores[i])) for i in order]


def ctc_sequence_logprob(logits, frame_mask, labels, label_lengths):
    """[B] log p(labels | x) under CTC, summed over all alignments: -optax.ctc_loss.

    logits [B, F, C] (log-softmaxed inside; log-probabilities pass unchanged), frame_mask
    [B, F] bool (valid frames first), labels [B, N] text ids (class = id + 1), label_lengths
    [B]. A transcript that cannot fit its frames gets a very low score (optax's log-epsilon
    floor, about -1e5 per frame), not -inf.
    """
    labels = jnp.asarray(labels)
    n = labels.shape[1]
    label_pad = (jnp.arange(n)[None, :] >= jnp.asarray(label_lengths)[:, None])
    logits = jnp.asarray(logits)
    return -optax.ctc_loss(logits, (~jnp.asarray(frame_mask)).astype(logits.dtype),
                           jnp.where(label_pad, 0, labels + 1).astype(jnp.int32),
                           label_pad.astype(logits.dtype), blank_id=BLANK)


def ctc_forced_align(log_probs: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray, float]:
    """The most probable CTC alignment of a *given* transcript (Viterbi over the extended
    sequence blank, y1, blank, y2, ..., blank): (starts [L], ends [L] inclusive frames of
    each label, the path's log-probability). This times the words of any decoder's output,
    not only the CTC head's own best path.

    log_probs [F, C] (log-softmax; one utterance's valid frames), labels [L] text ids (class
    = id + 1). ValueError when F frames cannot hold the labels (a repeated label needs a blank
    between its copies)."""
    lp = np.asarray(log_probs, np.float64)
    y = np.asarray(labels, np.int64).reshape(-1) + 1
    if lp.ndim != 2 or (len(y) and (y.min() < 1 or y.max() >= lp.shape[1])):
        raise ValueError(f"ctc_forced_align: expected log_probs [F, C] and text ids in "
                         f"[0, C - 1), got {lp.shape} and ids {(y - 1).tolist()}")
    f, n = lp.shape[0], len(y)
    needed = n + int(np.sum(y[1:] == y[:-1]))
    if needed > f:
        raise ValueError(f"ctc_forced_align: {n} labels need at least {needed} frames, got {f}")
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), float(lp[:, BLANK].sum())
    ext = np.zeros(2 * n + 1, np.int64)
    ext[1::2] = y
    s = len(ext)
    # state k may come from k (stay), k-1, or k-2 (skip a blank between different labels)
    skip = np.zeros(s, bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    score = np.full(s, -np.inf)
    score[:2] = lp[0, ext[:2]]
    back = np.zeros((f, s), np.int8)  # 0 stay, 1 from k-1, 2 from k-2
    for t in range(1, f):
        cands = np.stack([score, np.r_[-np.inf, score[:-1]],
                          np.where(skip, np.r_[-np.inf, -np.inf, score[:-2]], -np.inf)])
        back[t] = np.argmax(cands, axis=0)
        score = cands[back[t], np.arange(s)] + lp[t, ext]
    k = s - 1 if score[s - 1] >= score[s - 2] else s - 2
    total = float(score[k])
    states = np.zeros(f, np.int64)
    for t in range(f - 1, -1, -1):
        states[t] = k
        k -= int(back[t, k])
    label_of = np.where(states % 2 == 1, states // 2, -1)  # frame -> label index or blank
    starts, ends = np.full(n, -1), np.full(n, -1)
    for t, j in enumerate(label_of):
        if j >= 0:
            starts[j] = t if starts[j] < 0 else starts[j]
            ends[j] = t
    return starts, ends, total
