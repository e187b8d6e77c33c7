"""Per-token log-probabilities and entropies from logits — the one bridge from any policy apply
function to the RL losses, which only ever see [B, L] log-probs and masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chorus.rl.shapes import require_shape


def _at_least_f32(x: jax.Array) -> jax.Array:
    # bf16 logits lose too much in log_softmax; float64 (tests) must stay float64.
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def sequence_logprobs(logits: jax.Array, targets: jax.Array,
                      mask: jax.Array | None = None) -> jax.Array:
    """log softmax(logits)[target] per token: logits [B, L, V], targets [B, L] -> [B, L].

    Positions where `mask` is 0 are set to 0, so a plain sum over L is the completion logp.
    """
    require_shape("logits", logits.shape, (None, None, None))
    require_shape("targets", targets.shape, logits.shape[:2])
    logits = _at_least_f32(logits)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    logps = picked - jax.nn.logsumexp(logits, axis=-1)
    if mask is not None:
        require_shape("mask", mask.shape, logits.shape[:2])
        logps = jnp.where(mask.astype(bool), logps, 0.0)
    return logps


def token_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of the next-token distribution per position: [B, L, V] -> [B, L]."""
    require_shape("logits", logits.shape, (None, None, None))
    logits = _at_least_f32(logits)
    logz = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    probs = jnp.exp(logits - logz)
    return logz[..., 0] - jnp.sum(probs * logits, axis=-1)


def completion_logps(token_logps: jax.Array, mask: jax.Array, *, average: bool) -> jax.Array:
    """Sequence logp over the masked completion tokens: sum, or mean when `average` (IPO)."""
    require_shape("token_logps", token_logps.shape, (None, None))
    require_shape("mask", mask.shape, token_logps.shape)
    mask = mask.astype(token_logps.dtype)
    total = jnp.sum(token_logps * mask, axis=-1)
    if not average:
        return total
    return total / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
