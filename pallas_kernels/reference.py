"""Pure-JAX attention: the ground truth every kernel is tested against.

Layouts: q [B, S, Hq, D]; k, v [B, S, Hkv, D] with Hq a multiple of Hkv (grouped-query).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MASKED = -1e30  # finite, so fully masked rows give zeros rather than NaN


def _scores(q, k, scale, logit_soft_cap):
    b, s, hq, d = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, s, hkv, hq // hkv, d)
    scores = jnp.einsum("bqhgd,bkhd->bhgqk", qg.astype(jnp.float32), k.astype(jnp.float32))
    scores = scores * scale
    if logit_soft_cap is not None:
        scores = logit_soft_cap * jnp.tanh(scores / logit_soft_cap)
    return scores  # [B, Hkv, G, Sq, Sk]


def _softmax_combine(scores, mask, v, out_shape, dtype):
    scores = jnp.where(mask, scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = jnp.where(mask, probs, 0.0)
    out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v.astype(jnp.float32))
    return out.reshape(out_shape).astype(dtype)


def attention_reference(q, k, v, *, segment_ids=None, causal=True, sliding_window=None,
                        logit_soft_cap=None, scale=None, chunk_size=None):
    """Full-sequence attention with causal / segment / sliding-window / chunked masks.

    chunk_size (streaming encoders): query i sees key j iff j // chunk_size <= i // chunk_size.
    """
    b, s, hq, d = q.shape
    sk = k.shape[1]
    scale = d**-0.5 if scale is None else scale
    scores = _scores(q, k, scale, logit_soft_cap)
    qi = jnp.arange(s)[:, None]
    kj = jnp.arange(sk)[None, :]
    mask = jnp.ones((s, sk), bool)
    if causal:
        mask &= kj <= qi
    if sliding_window is not None:
        mask &= qi - kj < sliding_window
    if chunk_size is not None:
        mask &= kj // chunk_size <= qi // chunk_size
    mask = jnp.broadcast_to(mask, (b, s, sk))
    if segment_ids is not None:
        mask &= segment_ids[:, :, None] == segment_ids[:, None, :]
    return _softmax_combine(scores, mask[:, None, None], v, q.shape, q.dtype)


def decode_attention_reference(q, k_cache, v_cache, lengths, *, sliding_window=None,
                               logit_soft_cap=None, scale=None):
    """Window queries against a KV cache with per-sequence valid lengths.

    q: [B, W, Hq, D], the W newest tokens, already written at cache rows lengths-W .. lengths-1.
    Query i of sequence b sits at position lengths[b] - W + i and sees cache rows <= it.
    """
    b, w, hq, d = q.shape
    t = k_cache.shape[1]
    scale = d**-0.5 if scale is None else scale
    scores = _scores(q, k_cache, scale, logit_soft_cap)
    qpos = lengths[:, None] - w + jnp.arange(w)[None, :]  # [B, W]
    kpos = jnp.arange(t)[None, None, :]
    mask = kpos <= qpos[:, :, None]
    if sliding_window is not None:
        mask &= qpos[:, :, None] - kpos < sliding_window
    return _softmax_combine(scores, mask[:, None, None], v_cache, q.shape, q.dtype)
