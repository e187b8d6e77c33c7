"""Masked reductions over [B, L] per-token quantities, including the loss aggregation modes."""

from __future__ import annotations

import typing
from typing import Literal

import jax
import jax.numpy as jnp

from chorus.config import ConfigError, check
from chorus.rl.shapes import require_shape

# How a per-token loss becomes a scalar:
#   seq_mean_token_mean  mean over sequences of each sequence's mean over its tokens (GRPO)
#   token_mean           sum over all tokens / number of tokens (DAPO; long answers weigh more)
#   dr_grpo              sum over all tokens / (B * L_max) — a constant, no length bias (Dr. GRPO)
Aggregation = Literal["seq_mean_token_mean", "token_mean", "dr_grpo"]
AGGREGATIONS: tuple[str, ...] = typing.get_args(Aggregation)


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    return jnp.sum(jnp.where(mask.astype(bool), x, 0.0), axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Mean over masked entries; 0 where there are none (not NaN)."""
    count = jnp.sum(mask.astype(x.dtype), axis=axis)
    return masked_sum(x, mask, axis) / jnp.maximum(count, 1.0)


def masked_whiten(x: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / std over masked entries (population std); masked-out entries become 0."""
    mean = masked_mean(x, mask)
    var = masked_mean(jnp.square(x - mean), mask)
    return jnp.where(mask.astype(bool), (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


def aggregate(per_token: jax.Array, mask: jax.Array, mode: str,
              max_len: int | None = None) -> jax.Array:
    """Reduces a [B, L] per-token loss to a scalar with one of AGGREGATIONS."""
    require_shape("per_token", per_token.shape, (None, None))
    require_shape("mask", mask.shape, per_token.shape)
    if mode == "seq_mean_token_mean":
        return jnp.mean(masked_mean(per_token, mask, axis=-1))
    if mode == "token_mean":
        return masked_mean(per_token, mask)
    if mode == "dr_grpo":
        length = per_token.shape[1] if max_len is None else max_len
        check(length >= per_token.shape[1], "max_len",
              f"a length >= the sequence length {per_token.shape[1]}", max_len)
        return masked_sum(per_token, mask) / (per_token.shape[0] * length)
    raise ConfigError(f"aggregation: expected one of {list(AGGREGATIONS)}, got {mode!r}")
