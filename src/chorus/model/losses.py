"""Token-level losses shared by every experiment."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits, targets, mask):
    """Masked next-token cross-entropy. Returns (mean over masked tokens, token count)."""
    logz = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logits.astype(jnp.float32), targets[..., None], axis=-1)[..., 0]
    nll = (logz - picked) * mask
    count = mask.sum()
    return nll.sum() / jnp.maximum(count, 1.0), count


def token_accuracy(logits, targets, mask):
    hit = (jnp.argmax(logits, axis=-1) == targets) * mask
    return hit.sum() / jnp.maximum(mask.sum(), 1.0)
