"""Group relative policy optimization (GRPO) and its common variants.

A prompt is sampled G times; the G completions form a contiguous group in the batch.
Advantages (one per completion, shared by its tokens):
    baseline "mean":  A_i = r_i − mean_group(r)
    baseline "rloo":  A_i = r_i − mean_{j≠i} r_j          (leave-one-out)
    normalize_std:    A_i /= (std_group(r) + eps)         (off = Dr. GRPO; std has ddof=1)
Per token, with ratio ρ = exp(logp − logp_old):
    ℓ = −min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A) + β·KL_k(π‖π_ref)
then ℓ is aggregated over the [B, L] mask with one of masked.AGGREGATIONS.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import jax
import jax.numpy as jnp

from chorus.config import check
from chorus.rl.masked import AGGREGATIONS, Aggregation, aggregate, masked_mean
from chorus.rl.shapes import require_shape
from chorus.rl.surrogate import KL_ESTIMATORS, KLEstimator, clipped_surrogate, kl_estimate

Baseline = Literal["mean", "rloo"]
BASELINES: tuple[str, ...] = typing.get_args(Baseline)


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """The GRPO loss and its advantages. The group size G is not here: it is how the batch was
    sampled (`experiment.group_size` in an RL run), given to `group_advantages`."""

    baseline: Baseline = "mean"
    normalize_std: bool = True
    adv_eps: float = 1e-6
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2  # DAPO's "clip-higher" raises this (e.g. 0.28)
    kl_coef: float = 0.04  # β; 0 drops the reference model
    kl_estimator: KLEstimator = "k3"
    aggregation: Aggregation = "seq_mean_token_mean"
    max_len: int | None = None  # L_max for dr_grpo; None = the batch's padded length

    def __post_init__(self):
        check(self.baseline in BASELINES, "grpo.baseline", f"one of {list(BASELINES)}",
              self.baseline)
        check(self.adv_eps > 0, "grpo.adv_eps", "a positive number", self.adv_eps)
        check(0 <= self.clip_eps_low < 1, "grpo.clip_eps_low", "a value in [0, 1)",
              self.clip_eps_low)
        check(self.clip_eps_high >= 0, "grpo.clip_eps_high", "a number >= 0",
              self.clip_eps_high)
        check(self.kl_coef >= 0, "grpo.kl_coef", "a number >= 0", self.kl_coef)
        check(self.kl_estimator in KL_ESTIMATORS, "grpo.kl_estimator",
              f"one of {list(KL_ESTIMATORS)}", self.kl_estimator)
        check(self.aggregation in AGGREGATIONS, "grpo.aggregation",
              f"one of {list(AGGREGATIONS)}", self.aggregation)
        if self.max_len is not None:
            check(self.max_len > 0, "grpo.max_len", "a positive int or None", self.max_len)


def group_advantages(rewards: jax.Array, group_size: int, *, baseline: str = "mean",
                     normalize_std: bool = True, eps: float = 1e-6) -> jax.Array:
    """Per-completion advantages [B] from rewards [B] laid out as contiguous groups."""
    require_shape("rewards", rewards.shape, (None,))
    check(group_size >= 2, "group_size", "an int >= 2", group_size)
    check(rewards.shape[0] % group_size == 0, "rewards",
          f"a batch size divisible by group_size={group_size}", rewards.shape[0])
    check(baseline in BASELINES, "baseline", f"one of {list(BASELINES)}", baseline)
    r = rewards.reshape(-1, group_size)
    mean = jnp.mean(r, axis=-1, keepdims=True)
    if baseline == "rloo":
        # r_i − (Σr − r_i)/(G−1) = G/(G−1)·(r_i − mean)
        adv = (r - mean) * (group_size / (group_size - 1))
    else:
        adv = r - mean
    if normalize_std:
        adv = adv / (jnp.std(r, axis=-1, ddof=1, keepdims=True) + eps)
    return jax.lax.stop_gradient(adv.reshape(-1))


def _stats(prefix: str, x: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    mean = masked_mean(x, mask)
    big = jnp.finfo(x.dtype).max
    return {
        f"{prefix}/mean": mean,
        f"{prefix}/std": jnp.sqrt(masked_mean(jnp.square(x - mean), mask)),
        f"{prefix}/min": jnp.min(jnp.where(mask, x, big)),
        f"{prefix}/max": jnp.max(jnp.where(mask, x, -big)),
    }


def grpo_loss(logps: jax.Array, old_logps: jax.Array | None, ref_logps: jax.Array | None,
              advantages: jax.Array, mask: jax.Array,
              config: GRPOConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GRPO loss from per-token logps [B, L] of the policy being trained.

    old_logps: the sampling policy's logps ([B, L]); None = fully on-policy (ratio ≡ 1 but with
        the policy-gradient), i.e. stop_gradient(logps).
    ref_logps: the reference policy's logps; needed when config.kl_coef > 0.
    advantages: [B] (one per completion, e.g. from group_advantages) or [B, L].
    mask: [B, L], 1 on completion tokens.
    """
    require_shape("logps", logps.shape, (None, None))
    require_shape("mask", mask.shape, logps.shape)
    if old_logps is None:
        old_logps = logps
    require_shape("old_logps", old_logps.shape, logps.shape)
    if advantages.ndim == 1:
        require_shape("advantages", advantages.shape, logps.shape[:1])
        token_adv = jnp.broadcast_to(advantages[:, None], logps.shape)
    else:
        require_shape("advantages", advantages.shape, logps.shape)
        token_adv = advantages
    mask = mask.astype(bool)

    pg, ratio, clipped = clipped_surrogate(logps, old_logps, token_adv, config.clip_eps_low,
                                           config.clip_eps_high)
    per_token = pg
    metrics: dict[str, jax.Array] = {}
    if config.kl_coef > 0 and ref_logps is None:
        raise ValueError("ref_logps: expected [B, L] reference logps because "
                         f"grpo.kl_coef={config.kl_coef} > 0, got None")
    if ref_logps is not None:  # with kl_coef = 0 the KL is still worth logging
        require_shape("ref_logps", ref_logps.shape, logps.shape)
        kl = kl_estimate(logps, ref_logps, config.kl_estimator)
        if config.kl_coef > 0:
            per_token = pg + config.kl_coef * kl
        metrics["kl"] = jax.lax.stop_gradient(masked_mean(kl, mask))
    loss = aggregate(per_token, mask, config.aggregation, config.max_len)

    sg = jax.lax.stop_gradient
    adv_mask = jnp.ones_like(advantages, bool) if advantages.ndim == 1 else mask
    metrics.update({
        "loss": sg(loss),
        "loss/policy": sg(aggregate(pg, mask, config.aggregation, config.max_len)),
        "clip_fraction": masked_mean(clipped.astype(logps.dtype), mask),
        **_stats("ratio", sg(ratio), mask),
        **_stats("advantage", sg(advantages), adv_mask),
        "completion_length": jnp.mean(jnp.sum(mask, axis=-1).astype(logps.dtype)),
    })
    return loss, metrics
