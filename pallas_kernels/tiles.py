"""Tile math shared by every kernel variant: scores, masks, online softmax, gradients.

These are plain jnp functions on in-register tiles, so the TPU (Mosaic) and GPU (Triton)
kernels run the very same arithmetic and differ only in how tiles are loaded and where the
running state lives. Orientation-agnostic: `q_pos`/`lse`/`di` only need to broadcast against
the score tile, so the same helpers serve S = Q K^T and its transpose S^T = K Q^T.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Finite, so that max/exp never see inf - inf; exp(MASK_VALUE - real) underflows to exactly 0.
MASK_VALUE = -1e30
_SEEN_THRESHOLD = MASK_VALUE * 0.5


def precision_for(dtype) -> jax.lax.Precision | None:
    """fp32 inputs get true fp32 matmuls (TPU would otherwise use bf16 passes)."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def dot_nt(a, b):
    """a @ b.T with fp32 accumulation; contracting the last dim of both."""
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())),
                               preferred_element_type=jnp.float32,
                               precision=precision_for(a.dtype))


def dot_nn(a, b):
    """a @ b with fp32 accumulation."""
    return jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32,
                               precision=precision_for(a.dtype))


def scores(a, b, *, scale: float, logit_soft_cap: float | None):
    """Scaled (optionally soft-capped) logits a @ b.T in fp32."""
    s = dot_nt(a, b) * scale
    if logit_soft_cap is not None:
        s = logit_soft_cap * jnp.tanh(s / logit_soft_cap)
    return s


def soft_cap_grad(capped, logit_soft_cap: float | None, ds):
    """Chain rule through cap * tanh(s / cap): multiply by 1 - tanh^2."""
    if logit_soft_cap is None:
        return ds
    t = capped / logit_soft_cap
    return ds * (1.0 - t * t)


def visible(q_pos, k_pos, *, causal: bool, sliding_window: int | None, kv_len: int | None = None,
            q_seg=None, k_seg=None):
    """Which (query, key) pairs may attend; None when nothing is masked.

    Same semantics as the reference: causal k <= q, window q - k < w, equal segment ids,
    and keys at or beyond `kv_len` (block padding) hidden.
    """
    mask = None

    def both(a, b):
        return b if a is None else a & b

    if causal:
        mask = both(mask, k_pos <= q_pos)
    if sliding_window is not None:
        mask = both(mask, q_pos - k_pos < sliding_window)
    if kv_len is not None:
        mask = both(mask, k_pos < kv_len)
    if q_seg is not None:
        mask = both(mask, q_seg == k_seg)
    return mask


def apply_mask(s, mask):
    return s if mask is None else jnp.where(mask, s, MASK_VALUE)


def online_softmax_step(m_prev, l_prev, acc_prev, s, v):
    """One flash step over a kv tile: rows of `s` are queries, m/l are [rows, 1]."""
    m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
    p = jnp.exp(s - m_new)  # masked entries are MASK_VALUE -> 0 once a real score was seen
    alpha = jnp.exp(m_prev - m_new)
    l_new = alpha * l_prev + jnp.sum(p, axis=1, keepdims=True)
    acc_new = alpha * acc_prev + dot_nn(p.astype(v.dtype), v)
    return m_new, l_new, acc_new


def finalize(m, denom, acc, *, empty_lse: float = 0.0):
    """Normalize the accumulator; rows that saw no key give zeros (as the reference does).

    Returns (out fp32, lse fp32 [rows, 1]). `empty_lse` is stored for rows that saw nothing:
    0 keeps exp(MASK_VALUE - lse) = 0 in the backward; MASK_VALUE makes a split weigh 0 when
    partial results are combined.
    """
    seen = m > _SEEN_THRESHOLD
    l_safe = jnp.where(seen, denom, 1.0)
    out = jnp.where(seen, acc / l_safe, 0.0)
    lse = jnp.where(seen, m + jnp.log(l_safe), empty_lse)
    return out, lse


def probs(s_masked, lse):
    """Recompute softmax probabilities from the saved logsumexp."""
    return jnp.exp(s_masked - lse)


def dscores(p, dp, di, capped, logit_soft_cap):
    """dL/d(raw scaled logits) from p, dp = dO V^T and di = rowsum(dO * O)."""
    return soft_cap_grad(capped, logit_soft_cap, p * (dp - di))
