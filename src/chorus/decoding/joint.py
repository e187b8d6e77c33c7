"""Joint CTC/attention decoding: a CTC head's prefix scores fused into the decoder's choices.

At every output position the candidates - the decoder's K most probable ids, and the M ids the
CTC head fires most confidently anywhere in the row's audio (its top frame posteriors) - are
ranked by

    (1 - w) * log p_dec(c | y_<i)  +  w * log psi(y_<i + c)

where psi(h) is the CTC prefix probability of h, the total probability of every alignment of
the audio whose collapsed labels start with h (Watanabe et al. 2017, "Hybrid CTC/attention",
sec. 3.2; the end token scores the CTC probability of y_<i itself). Other ids are ruled out.
The CTC candidates matter: a decoder whose language prior is confidently wrong about a content
word often has the right one far below its top K.
The decoding loops (`chorus.decoding.verified`) take a scorer: with `CtcPrefixScorer` greedy
decoding is joint greedy, and verified decoding, which judges each draft by the same fused
scores, stays token-identical to it.

The prefix variables of the CTC forward algorithm (n_t, b_t: alignments of frames 0..t that
spell h and end in its last label / in a blank) are kept per row for the committed prefix.
Extending them by one label is a linear recurrence over frames in probability space, run as a
`lax.associative_scan` (log-space affine maps): no loop over frames, no underflow. psi of the
K candidates at every slot of a verify window is one logsumexp over frames.

Classes follow `chorus.model.ctc`: class 0 = blank, class c = text id c - 1. Ids that are
neither text nor the end token cannot be spelled by the CTC head: their CTC score is -inf (and
committing one leaves the CTC state as it was).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from chorus.decoding.ctc import BLANK

NEG_INF = -jnp.inf
# The CTC term of a candidate no alignment can spell. Finite, so that when every candidate is
# infeasible (more labels than frames) the decoder's ranking still decides.
INFEASIBLE = -1e5


@flax.struct.dataclass
class PrefixState:
    """CTC forward variables of each row's prefix, with a leading column for "before frame 0".

    n, b [..., F + 1] log-probabilities: column t + 1 = alignments of frames 0..t spelling the
    prefix and ending in its last label (n) / in a blank (b). last [...]: the prefix's last
    class (BLANK for the empty prefix: no label to repeat). psi [...]: log psi(prefix), 0 for
    the empty one.
    """

    n: jax.Array
    b: jax.Array
    last: jax.Array
    psi: jax.Array


def ctc_frame_logprobs(logits, frame_mask) -> jax.Array:
    """Per-frame CTC log-probabilities [B, F, C] with masked frames made certain blanks, so
    every recursion can run over all F frames: an alignment crosses them at probability 1."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    blank_only = jnp.full_like(log_probs, NEG_INF).at[..., BLANK].set(0.0)
    return jnp.where(frame_mask[..., None], log_probs, blank_only)


def _affine_scan(a, u):
    """x_t = logaddexp(a_t + x_{t-1}, u_t) with x_{-1} = -inf, along the last axis."""

    def compose(earlier, later):
        a1, u1 = earlier
        a2, u2 = later
        return a1 + a2, jnp.logaddexp(u1 + a2, u2)

    return jax.lax.associative_scan(compose, (a, u), axis=-1)[1]


def empty_prefix(log_probs) -> PrefixState:
    """The state of the empty prefix: all blanks so far. log_probs [B, F, C]."""
    blanks = jnp.cumsum(log_probs[..., BLANK], axis=-1)
    lead = jnp.zeros(blanks.shape[:-1] + (1,), blanks.dtype)
    b = jnp.concatenate([lead, blanks], axis=-1)
    return PrefixState(jnp.full_like(b, NEG_INF), b, jnp.full(b.shape[:-1], BLANK, jnp.int32),
                       jnp.zeros(b.shape[:-1], b.dtype))


def _reach(state: PrefixState, classes) -> jax.Array:
    """log-probability [..., F] that frames 0..t-1 spell the prefix and frame t may start a new
    label `classes` (a repeat of the last label needs a blank in between)."""
    n = jnp.where(classes[..., None] == state.last[..., None], NEG_INF, state.n)
    return jnp.logaddexp(state.b, n)[..., :-1]


def _class_logprobs(log_probs, classes) -> jax.Array:
    """log_probs [B, F, C], classes [B, ...] -> [B, ..., F]."""
    by_class = jnp.moveaxis(log_probs, -1, 1)  # [B, C, F]
    flat = classes.reshape(classes.shape[0], -1)
    picked = jnp.take_along_axis(by_class, flat[..., None], axis=1)  # [B, n, F]
    return picked.reshape(classes.shape + (log_probs.shape[1],))


def extend(state: PrefixState, log_probs, classes) -> PrefixState:
    """The state of each row's prefix + one label: state fields [B, F + 1], classes [B] >= 1."""
    x = _class_logprobs(log_probs, classes[:, None])[:, 0]  # [B, F]
    opened = x + _reach(state, classes)  # frame t opens the new label
    n = _affine_scan(x, opened)
    blank = log_probs[..., BLANK]
    n_before = jnp.concatenate([jnp.full_like(n[:, :1], NEG_INF), n[:, :-1]], axis=-1)
    b = _affine_scan(blank, blank + n_before)
    lead = jnp.full_like(n[:, :1], NEG_INF)
    return PrefixState(jnp.concatenate([lead, n], -1), jnp.concatenate([lead, b], -1), classes,
                       jax.nn.logsumexp(opened, axis=-1))


def prefix_logprob(state: PrefixState, log_probs, classes) -> jax.Array:
    """log psi(prefix + c): the probability that the collapsed labels start with prefix + c.
    state fields [B, S, F + 1], classes [B, S, K] >= 1 -> [B, S, K]."""
    x = _class_logprobs(log_probs, classes)  # [B, S, K, F]
    sub = jax.tree.map(lambda v: v[:, :, None], state)
    return jax.nn.logsumexp(x + _reach(sub, classes), axis=-1)


def sequence_logprob(state: PrefixState) -> jax.Array:
    """log p_ctc(prefix): every alignment of all frames spells exactly the prefix."""
    return jnp.logaddexp(state.n[..., -1], state.b[..., -1])


@flax.struct.dataclass
class NoScorer:
    """The decoder's own scores: plain greedy / verified decoding."""

    def init(self):
        return ()

    def fuse(self, state, logits, drafts):
        return logits, ()

    def advance(self, slot_states, accepted, nxt, live):
        return ()

    def increments(self, state, logits):
        """Per-token score increments [R, V] of one step (beam search): log-probs."""
        return jax.nn.log_softmax(logits, axis=-1), ()

    def repeat(self, width: int):
        return self


@flax.struct.dataclass
class CtcPrefixScorer:
    """Shallow fusion of a CTC head's prefix probabilities (see the module docstring).

    log_probs [B, F, text_size + 1]: `ctc_frame_logprobs` of the request's CTC logits, one row
    per decoded row. fired [B, M]: each row's CTC candidates (text ids). weight: w in [0, 1].
    candidates: K, the decoder's top ids re-ranked.
    """

    log_probs: jax.Array
    fired: jax.Array
    weight: float = flax.struct.field(pytree_node=False)
    candidates: int = flax.struct.field(pytree_node=False)
    end_id: int = flax.struct.field(pytree_node=False)

    @property
    def text_size(self) -> int:
        return self.log_probs.shape[-1] - 1

    def init(self) -> PrefixState:
        return empty_prefix(self.log_probs)

    def _slot_states(self, state: PrefixState, drafts) -> PrefixState:
        """The prefix of slot j: the committed one + drafts d_1..d_j, stacked [B, k + 1, ...]."""
        states = [state]
        for j in range(drafts.shape[1]):
            states.append(self._extend(states[-1], drafts[:, j]))
        return jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *states)

    def _extend(self, state: PrefixState, ids) -> PrefixState:
        """+ one id [B]: a text id extends the prefix; any other id leaves it as it was."""
        is_text = (ids >= 0) & (ids < self.text_size)
        grown = extend(state, self.log_probs, jnp.where(is_text, ids + 1, 1))
        return jax.tree.map(lambda g, s: jnp.where(
            is_text.reshape(is_text.shape + (1,) * (g.ndim - 1)), g, s), grown, state)

    def fuse(self, state: PrefixState, logits, drafts):
        """Fused logits [B, k + 1, V] of a verify window's slots (slot j follows the drafts
        d_1..d_j [B, k]): the fused score on each slot's candidates (the decoder's top K and
        the row's fired ids), -inf elsewhere; and the slot prefixes' states for `advance`."""
        slots = self._slot_states(state, drafts)
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        _, ids = jax.lax.top_k(log_p, self.candidates)  # [B, S, K]
        fired = jnp.broadcast_to(self.fired[:, None], ids.shape[:2] + self.fired.shape[1:])
        ids = jnp.concatenate([ids, fired], axis=-1)  # an id in both gets one fused score
        top = jnp.take_along_axis(log_p, ids, axis=-1)
        is_text = ids < self.text_size
        psi = prefix_logprob(slots, self.log_probs, jnp.where(is_text, ids + 1, 1))
        ended = jnp.broadcast_to(sequence_logprob(slots)[..., None], psi.shape)
        ctc = jnp.where(is_text, psi, jnp.where(ids == self.end_id, ended, NEG_INF))
        fused = (1 - self.weight) * top + self.weight * jnp.maximum(ctc, INFEASIBLE)
        fused = jnp.where(jnp.isneginf(top), NEG_INF, fused)  # an id the constraints ruled out
        b, s, _ = ids.shape
        rows, cols = jnp.arange(b)[:, None, None], jnp.arange(s)[None, :, None]
        out = jnp.full(log_p.shape, NEG_INF, log_p.dtype).at[rows, cols, ids].set(fused)
        return out, slots

    def advance(self, slot_states: PrefixState, accepted, nxt, live) -> PrefixState:
        """The committed prefix after a step: slot `accepted`'s prefix + nxt (rows not live keep
        their state; `slot_states` must then hold it at slot 0 as `fuse` returns it)."""
        idx = accepted.reshape(-1, 1, 1)
        at = PrefixState(jnp.take_along_axis(slot_states.n, idx, 1)[:, 0],
                         jnp.take_along_axis(slot_states.b, idx, 1)[:, 0],
                         jnp.take_along_axis(slot_states.last, accepted[:, None], 1)[:, 0],
                         jnp.take_along_axis(slot_states.psi, accepted[:, None], 1)[:, 0])
        new = self._extend(at, nxt)
        old = jax.tree.map(lambda x: x[:, 0], slot_states)
        return jax.tree.map(lambda n, o: jnp.where(
            live.reshape(live.shape + (1,) * (n.ndim - 1)), n, o), new, old)

    def increments(self, state: PrefixState, logits):
        """One beam-search step: per-token increments [R, V] of the joint score
        (1 - w) * sum log p_dec + w * log psi, i.e. the fused score minus w * log psi(prefix);
        they sum to (1 - w) * log p_dec(y) + w * log p_ctc(y) over a finished hypothesis, and
        are <= 0 (psi only falls as a prefix grows), as the beam's stopping bound needs.
        Also the slot states for `advance` (rows [R, 1, ...])."""
        fused, slots = self.fuse(state, logits[:, None], jnp.zeros(logits.shape[:1] + (0,),
                                                                   jnp.int32))
        return fused[:, 0] - self.weight * jnp.maximum(state.psi, INFEASIBLE)[:, None], slots

    def repeat(self, width: int) -> CtcPrefixScorer:
        """The scorer of each row repeated `width` times (rows i*width .. i*width+width-1)."""
        return self.replace(log_probs=jnp.repeat(self.log_probs, width, axis=0),
                            fired=jnp.repeat(self.fired, width, axis=0))


def fired_ids(log_probs, count: int) -> jax.Array:
    """[B, count] the text ids with the highest frame posterior anywhere in each row (frame
    log-probabilities [B, F, C]; blank excluded): the labels the CTC head spells."""
    if count == 0:
        return jnp.zeros(log_probs.shape[:1] + (0,), jnp.int32)
    peak = jnp.max(log_probs[..., 1:], axis=1)  # [B, text_size]
    return jax.lax.top_k(peak, count)[1].astype(jnp.int32)


def ctc_prefix_scorer(ctc_logits, frame_mask, *, weight: float, candidates: int,
                      end_id: int, ctc_candidates: int = 0) -> CtcPrefixScorer:
    """A scorer from a CTC head's logits [B, F, text_size + 1] and frame mask [B, F]:
    candidates = the decoder's top `candidates` ids + the row's `ctc_candidates` fired ids."""
    if not 0 <= weight <= 1:
        raise ValueError(f"weight: expected a value in [0, 1], got {weight}")
    if not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates: expected an int >= 1, got {candidates!r}")
    if not isinstance(ctc_candidates, int) or not 0 <= ctc_candidates < ctc_logits.shape[-1]:
        raise ValueError(f"ctc_candidates: expected an int in [0, {ctc_logits.shape[-1] - 1}], "
                         f"got {ctc_candidates!r}")
    if ctc_logits.ndim != 3 or frame_mask.shape != ctc_logits.shape[:2]:
        raise ValueError(f"ctc_logits / frame_mask: expected [B, F, C] and [B, F], got "
                         f"{ctc_logits.shape} and {frame_mask.shape}")
    log_probs = ctc_frame_logprobs(ctc_logits, frame_mask)
    return CtcPrefixScorer(log_probs, fired_ids(log_probs, ctc_candidates), weight, candidates,
                           end_id)
