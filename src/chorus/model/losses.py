"""Token-level losses shared by every experiment."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits, targets, mask, label_smoothing: float = 0.0):
    """Masked next-token cross-entropy. Returns (mean over masked tokens, token count).

    label_smoothing ε: the target distribution is (1 − ε)·one-hot + ε/V over the V logits
    (Szegedy et al. 2016), so the loss is (1 − ε)·NLL + ε·(log Z − mean logit); ε = 0 is NLL."""
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = logz - picked
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll + label_smoothing * (logz - logits.mean(axis=-1))
    nll = nll * mask
    count = mask.sum()
    return nll.sum() / jnp.maximum(count, 1.0), count


def token_accuracy(logits, targets, mask):
    hit = (jnp.argmax(logits, axis=-1) == targets) * mask
    return hit.sum() / jnp.maximum(mask.sum(), 1.0)
