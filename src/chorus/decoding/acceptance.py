"""Accepting draft tokens against the main head's verify window.

The window is [b, d_1..d_k]; slot s of the verify forward gives the main head's distribution
p_s of the token after slot s, so d_j is judged by p_{j-1}. Both rules return
(a [B], next [B]): a = number of accepted drafts, next = the token after d_a (the bonus when
a = k, the correction otherwise). Every step commits a + 1 >= 1 tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def leading_true(accept: jax.Array) -> jax.Array:
    """Number of leading True per row of accept [B, k]."""
    return jnp.cumprod(accept.astype(jnp.int32), axis=1).sum(axis=1).astype(jnp.int32)


def greedy_accept(p_logits: jax.Array, drafts: jax.Array):
    """Exact greedy rule: accept while d_j == argmax p_{j-1}; next = argmax p_a.

    p_logits [B, k+1, V], drafts [B, k].
    """
    best = jnp.argmax(p_logits, axis=-1).astype(jnp.int32)  # [B, k+1]
    a = leading_true(drafts == best[:, :-1])
    return a, jnp.take_along_axis(best, a[:, None], axis=1)[:, 0]


def speculative_accept(p_probs: jax.Array, q_probs: jax.Array, drafts: jax.Array, key):
    """Speculative sampling (Leviathan et al. / Chen et al.): tokens come out distributed as p.

    p_probs [B, k+1, V] target distributions, q_probs [B, k, V] the distributions the drafts
    were sampled from (d_j ~ q_j), drafts [B, k]. Accept d_j with probability
    min(1, p_{j-1}(d_j) / q_j(d_j)); at the first rejection j sample next from
    norm(max(0, p_{j-1} - q_j)); when all k are accepted sample the bonus from p_k.
    """
    b, k = drafts.shape
    accept_key, sample_key = jax.random.split(key)
    p_draft = jnp.take_along_axis(p_probs[:, :k], drafts[..., None], axis=-1)[..., 0]
    q_draft = jnp.take_along_axis(q_probs, drafts[..., None], axis=-1)[..., 0]
    u = jax.random.uniform(accept_key, (b, k))
    a = leading_true(u * q_draft < p_draft)  # u < p/q without dividing by q
    # A zero "draft distribution" after slot k makes the bonus the residual case: max(0, p_k).
    q_padded = jnp.concatenate([q_probs, jnp.zeros_like(p_probs[:, :1])], axis=1)
    p_a = jnp.take_along_axis(p_probs, a[:, None, None], axis=1)[:, 0]
    q_a = jnp.take_along_axis(q_padded, a[:, None, None], axis=1)[:, 0]
    residual = jnp.maximum(p_a - q_a, 0.0)
    total = residual.sum(axis=-1, keepdims=True)
    # p == q leaves no residual mass; rejection then has probability 0, so any choice is moot.
    residual = jnp.where(total > 0, residual / jnp.maximum(total, 1e-30), p_a)
    nxt = jax.random.categorical(sample_key, jnp.log(residual), axis=-1).astype(jnp.int32)
    return a, nxt
