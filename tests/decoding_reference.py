"""Loop references for the decoding tests: the decoding constraints
(chorus.decoding.constraints), the CTC prefix variables (chorus.decoding.joint), and an oracle
drafter that forces every acceptance pattern on the verify loop."""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


def np_constrain(logits, generated, allowed=None, penalty=1.0, window=0):
    """Constrained logits [V] for the next token after `generated` (the tokens generated so
    far, prompt excluded): CTRL penalty on each distinct id of the last `window` generated
    tokens (positive / penalty, else * penalty), then -inf outside `allowed` [V]."""
    out = np.array(logits, np.float32)
    if window > 0 and penalty != 1.0:
        for v in set(int(t) for t in list(generated)[max(0, len(generated) - window):]):
            out[v] = out[v] / np.float32(penalty) if out[v] > 0 else out[v] * np.float32(penalty)
    if allowed is not None:
        out[~np.asarray(allowed, bool)] = -np.inf
    return out


def np_ctc_prefix(log_probs, prefix):
    """Loop reference of the CTC prefix variables (float64): (n, b) [F] for the label classes
    `prefix` over per-frame log-probabilities [F, C] (class 0 = blank). n[t] / b[t]: frames
    0..t spell the prefix and frame t is its last label / a blank."""
    lp = np.asarray(log_probs, np.float64)
    f = len(lp)
    n = np.full(f, -np.inf)
    b = np.cumsum(lp[:, 0])  # the empty prefix: blanks only
    for i, c in enumerate(prefix):
        last = prefix[i - 1] if i else None
        new_n, new_b = np.full(f, -np.inf), np.full(f, -np.inf)
        for t in range(f):
            # Frame t may open label c after frames 0..t-1 spelled the shorter prefix.
            if t == 0:
                opened = 0.0 if i == 0 else -np.inf
            else:
                opened = np.logaddexp(b[t - 1], -np.inf if c == last else n[t - 1])
            stay = new_n[t - 1] if t else -np.inf
            new_n[t] = lp[t, c] + np.logaddexp(stay, opened)
            if t:
                new_b[t] = lp[t, 0] + np.logaddexp(new_b[t - 1], new_n[t - 1])
        n, b = new_n, new_b
    return n, b


def np_ctc_prefix_logprob(log_probs, prefix, c):
    """log psi(prefix + c): alignments whose collapsed labels start with prefix + (c,)."""
    lp = np.asarray(log_probs, np.float64)
    n, b = np_ctc_prefix(lp, prefix)
    last = prefix[-1] if prefix else None
    total = -np.inf
    for t in range(len(lp)):
        if t == 0:
            opened = 0.0 if not prefix else -np.inf
        else:
            opened = np.logaddexp(b[t - 1], -np.inf if c == last else n[t - 1])
        total = np.logaddexp(total, opened + lp[t, c])
    return total


def np_ctc_sequence_logprob(log_probs, prefix):
    """log p_ctc(prefix) over all frames."""
    n, b = np_ctc_prefix(log_probs, prefix)
    return float(np.logaddexp(n[-1], b[-1]))


@flax.struct.dataclass
class OracleDrafter:
    """Drafts a known continuation, corrupted where `wrong` says: every acceptance length
    0..k occurs, per row differently. State: tokens known so far (base included)."""

    reference: jax.Array  # [B, N] the continuation (e.g. the greedy tokens)
    wrong: jax.Array  # [B, N] corrupt the draft for output index i
    num_draft: int = flax.struct.field(pytree_node=False)
    text_size: int = flax.struct.field(pytree_node=False)  # a corrupted draft stays text

    def init(self, prompts, lengths, prefill_hidden, capacity):
        return jnp.zeros(prompts.shape[:1], jnp.int32)

    def propose(self, state, follow, window_hidden, accepted, live, choose):
        known = jnp.where(live, state + accepted + 1, state)
        idx = known[:, None] + jnp.arange(self.num_draft)[None, :]
        drafts = jnp.take_along_axis(self.reference, idx, axis=1)
        bad = jnp.take_along_axis(self.wrong, idx, axis=1)
        return known, jnp.where(bad, (drafts + 1) % self.text_size, drafts), None
