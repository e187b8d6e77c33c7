"""Per-token policy-gradient terms shared by GRPO and PPO: the clipped ratio surrogate and KL
estimators. Old-policy and reference log-probs are constants (stop_gradient) by construction."""

from __future__ import annotations

import typing
from typing import Literal

import jax
import jax.numpy as jnp

from chorus.config import ConfigError

KLEstimator = Literal["k1", "k3"]
KL_ESTIMATORS: tuple[str, ...] = typing.get_args(KLEstimator)


def kl_estimate(logps: jax.Array, ref_logps: jax.Array, estimator: str) -> jax.Array:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi.

    k1 = logp - ref (unbiased, can be negative); k3 = e^(ref-logp) - (ref-logp) - 1 (unbiased,
    always >= 0, lower variance).
    """
    ref_logps = jax.lax.stop_gradient(ref_logps)
    if estimator == "k1":
        return logps - ref_logps
    if estimator == "k3":
        log_ratio = ref_logps - logps
        return jnp.exp(log_ratio) - log_ratio - 1.0
    raise ConfigError(f"kl_estimator: expected one of {list(KL_ESTIMATORS)}, got {estimator!r}")


def clipped_surrogate(logps: jax.Array, old_logps: jax.Array, advantages: jax.Array,
                      eps_low: float, eps_high: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-token -min(r·A, clip(r, 1-eps_low, 1+eps_high)·A) with r = exp(logp - logp_old).

    Returns (loss, ratio, clipped) where `clipped` marks tokens whose gradient the clip zeroed.
    """
    old_logps = jax.lax.stop_gradient(old_logps)
    advantages = jax.lax.stop_gradient(advantages)
    ratio = jnp.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped_obj = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -jnp.minimum(unclipped, clipped_obj)
    clipped = ((advantages > 0) & (ratio > 1.0 + eps_high)) | (
        (advantages < 0) & (ratio < 1.0 - eps_low))
    return loss, ratio, clipped
