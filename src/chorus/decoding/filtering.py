"""Next-token distributions: temperature, top-k and top-p (nucleus) filtering, sampling.

Order (as in common LLM samplers): divide by the temperature, keep the top-k logits, then keep
the nucleus of the renormalized top-k distribution. Filtered-out tokens get -inf logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Masks logits [..., V] outside the top-k and the top-p nucleus to -inf.

    top_k = 0 is off; a token is kept when its logit >= the k-th largest (ties kept).
    top_p = 1 is off; sorting by probability, a token is kept when the mass ranked strictly
    above it is < top_p (so the token that crosses top_p is kept, and so is the argmax);
    tokens tied with the smallest kept logit are kept too.
    """
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    if top_p < 1.0:
        ranked = -jnp.sort(-logits, axis=-1)  # descending
        probs = jax.nn.softmax(ranked, axis=-1)
        mass_above = jnp.cumsum(probs, axis=-1) - probs
        num_kept = jnp.sum(mass_above < top_p, axis=-1, keepdims=True)
        threshold = jnp.take_along_axis(ranked, num_kept - 1, axis=-1)
        logits = jnp.where(logits >= threshold, logits, -jnp.inf)
    return logits


def sampling_logits(logits: jax.Array, temperature: float, top_k: int = 0,
                    top_p: float = 1.0) -> jax.Array:
    """The logits of the distribution actually sampled from (fp32). temperature must be > 0."""
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0 for sampling (0 means greedy), got "
                         f"{temperature}")
    return filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)


def sampling_probs(logits, temperature: float, top_k: int = 0, top_p: float = 1.0):
    return jax.nn.softmax(sampling_logits(logits, temperature, top_k, top_p), axis=-1)


def token_logprob(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log softmax(logits)[token]: logits [..., V], tokens [...] -> [...] (fp32)."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)
