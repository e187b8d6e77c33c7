"""PPO for token-level RLHF: KL-shaped rewards, GAE, clipped policy and value losses.

    r_t      = −β·KL_t  (+ the sequence score on the completion's last token)
    δ_t      = r_t + γ·V_{t+1} − V_t
    A_t      = δ_t + γλ·A_{t+1}                 (reverse scan; V_{t+1} = A_{t+1} = 0 after an end)
    R_t      = A_t + V_t
    L_pg     = −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A),  ρ = exp(logp − logp_old)
    L_v      = 0.5·max((V − R)², (clip(V, V_old − c, V_old + c) − R)²)
    loss     = agg(L_pg) + value_coef·agg(L_v) − entropy_coef·agg(H)
"Next" means the next *valid* (mask = 1) position of the same row: masked positions are skipped
and get A = 0, so prompt or padding tokens inside a row do not break the recursion. `dones`
marks the last token of an episode (packed rows); nothing is bootstrapped across it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from chorus.config import check
from chorus.rl.logprobs import token_entropy
from chorus.rl.masked import AGGREGATIONS, Aggregation, aggregate, masked_mean, masked_whiten
from chorus.rl.shapes import require_shape
from chorus.rl.surrogate import KL_ESTIMATORS, KLEstimator, clipped_surrogate, kl_estimate


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    gamma: float = 1.0
    lam: float = 0.95
    clip_eps: float = 0.2
    value_clip: float = 0.2  # c in the clipped value loss
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    kl_coef: float = 0.05  # β of the per-token KL penalty folded into the rewards
    kl_estimator: KLEstimator = "k1"
    normalize_advantages: bool = True
    aggregation: Aggregation = "token_mean"

    def __post_init__(self):
        check(0 <= self.gamma <= 1, "ppo.gamma", "a value in [0, 1]", self.gamma)
        check(0 <= self.lam <= 1, "ppo.lam", "a value in [0, 1]", self.lam)
        check(0 < self.clip_eps < 1, "ppo.clip_eps", "a value in (0, 1)", self.clip_eps)
        check(self.value_clip > 0, "ppo.value_clip", "a positive number", self.value_clip)
        check(self.value_coef >= 0, "ppo.value_coef", "a number >= 0", self.value_coef)
        check(self.entropy_coef >= 0, "ppo.entropy_coef", "a number >= 0", self.entropy_coef)
        check(self.kl_coef >= 0, "ppo.kl_coef", "a number >= 0", self.kl_coef)
        check(self.kl_estimator in KL_ESTIMATORS, "ppo.kl_estimator",
              f"one of {list(KL_ESTIMATORS)}", self.kl_estimator)
        check(self.aggregation in AGGREGATIONS, "ppo.aggregation",
              f"one of {list(AGGREGATIONS)}", self.aggregation)


def last_token_mask(mask: jax.Array) -> jax.Array:
    """[B, L] one-hot of each row's last valid position (all zero for an empty row)."""
    m = mask.astype(bool)
    later_valid = jnp.flip(jnp.cumsum(jnp.flip(m, -1), -1), -1) - m  # valid positions after t
    return m & (later_valid == 0)


def kl_shaped_rewards(scores: jax.Array, logps: jax.Array, ref_logps: jax.Array,
                      mask: jax.Array, kl_coef: float,
                      estimator: str = "k1") -> tuple[jax.Array, jax.Array]:
    """Per-token rewards: −kl_coef·KL_t on every completion token, plus the sequence score
    [B] on the last one. Returns (rewards [B, L], kl [B, L]), both 0 off the mask."""
    require_shape("logps", logps.shape, (None, None))
    require_shape("ref_logps", ref_logps.shape, logps.shape)
    require_shape("mask", mask.shape, logps.shape)
    require_shape("scores", scores.shape, logps.shape[:1])
    valid = mask.astype(bool)
    kl = jnp.where(valid, kl_estimate(jax.lax.stop_gradient(logps), ref_logps, estimator), 0.0)
    rewards = -kl_coef * kl + jnp.where(last_token_mask(mask), scores[:, None], 0.0)
    return jax.lax.stop_gradient(rewards), jax.lax.stop_gradient(kl)


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float, lam: float,
        dones: jax.Array | None = None,
        bootstrap_value: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation over [B, L]; returns (advantages, returns = A + V).

    bootstrap_value [B]: V after the row's last valid token for truncated episodes (default 0,
    i.e. the episode ended); ignored when that token is marked done.
    """
    require_shape("rewards", rewards.shape, (None, None))
    require_shape("values", values.shape, rewards.shape)
    require_shape("mask", mask.shape, rewards.shape)
    dtype = jnp.promote_types(rewards.dtype, values.dtype)
    batch = rewards.shape[0]
    dones = jnp.zeros(rewards.shape, bool) if dones is None else dones.astype(bool)
    require_shape("dones", dones.shape, rewards.shape)
    if bootstrap_value is None:
        bootstrap_value = jnp.zeros((batch,), dtype)
    require_shape("bootstrap_value", bootstrap_value.shape, (batch,))
    rewards, values = rewards.astype(dtype), jax.lax.stop_gradient(values).astype(dtype)
    valid = mask.astype(bool)

    def step(carry, xs):
        next_value, next_adv = carry
        r, v, m, done = xs
        cont = jnp.where(done, 0.0, 1.0).astype(dtype)
        delta = r + gamma * cont * next_value - v
        adv = delta + gamma * lam * cont * next_adv
        # A masked position emits 0 and passes the carry through untouched.
        carry = (jnp.where(m, v, next_value), jnp.where(m, adv, next_adv))
        return carry, jnp.where(m, adv, 0.0)

    init = (bootstrap_value.astype(dtype), jnp.zeros((batch,), dtype))
    xs = tuple(jnp.swapaxes(x, 0, 1) for x in (rewards, values, valid, dones))
    _, adv_t = jax.lax.scan(step, init, xs, reverse=True)
    advantages = jnp.swapaxes(adv_t, 0, 1)
    returns = jnp.where(valid, advantages + values, 0.0)
    return jax.lax.stop_gradient(advantages), jax.lax.stop_gradient(returns)


def ppo_advantages(rewards: jax.Array, values: jax.Array, mask: jax.Array, config: PPOConfig,
                   dones: jax.Array | None = None,
                   bootstrap_value: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """GAE with config's γ, λ; advantages whitened over the mask when configured (returns are
    always from the raw advantages)."""
    advantages, returns = gae(rewards, values, mask, config.gamma, config.lam, dones,
                              bootstrap_value)
    if config.normalize_advantages:
        advantages = masked_whiten(advantages, mask)
    return advantages, returns


def clipped_value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array,
                       clip: float) -> jax.Array:
    """Per-token 0.5·max((V − R)², (clip(V, V_old ± c) − R)²)."""
    old_values = jax.lax.stop_gradient(old_values)
    returns = jax.lax.stop_gradient(returns)
    clipped = old_values + jnp.clip(values - old_values, -clip, clip)
    return 0.5 * jnp.maximum(jnp.square(values - returns), jnp.square(clipped - returns))


def ppo_loss(logps: jax.Array, old_logps: jax.Array, advantages: jax.Array, returns: jax.Array,
             values: jax.Array, old_values: jax.Array, mask: jax.Array, config: PPOConfig,
             logits: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO loss on [B, L] per-token quantities.

    values: the value head's current predictions (differentiated); old_values: at rollout time.
    logits: [B, L, V] policy logits at the completion positions, for the entropy bonus (needed
        when config.entropy_coef > 0; when given, entropy is also logged).
    """
    shape = logps.shape
    require_shape("logps", shape, (None, None))
    for name, x in (("old_logps", old_logps), ("advantages", advantages),
                    ("returns", returns), ("values", values), ("old_values", old_values),
                    ("mask", mask)):
        require_shape(name, x.shape, shape)
    valid = mask.astype(bool)
    agg = lambda x: aggregate(x, valid, config.aggregation)
    sg = jax.lax.stop_gradient

    pg, ratio, clipped = clipped_surrogate(logps, old_logps, advantages, config.clip_eps,
                                           config.clip_eps)
    vf = clipped_value_loss(values, old_values, returns, config.value_clip)
    policy_loss, value_loss = agg(pg), agg(vf)
    loss = policy_loss + config.value_coef * value_loss
    metrics: dict[str, jax.Array] = {}
    if config.entropy_coef > 0 and logits is None:
        raise ValueError("logits: expected [B, L, V] policy logits because "
                         f"ppo.entropy_coef={config.entropy_coef} > 0, got None")
    if logits is not None:
        require_shape("logits", logits.shape, (*shape, None))
        entropy = agg(token_entropy(logits))
        loss = loss - config.entropy_coef * entropy
        metrics["entropy"] = sg(entropy)
    value_clipped = jnp.abs(values - sg(old_values)) > config.value_clip
    approx_kl = 0.5 * jnp.square(logps - sg(old_logps))  # k2 estimate of KL(old ‖ new)
    metrics.update({
        "loss": sg(loss),
        "loss/policy": sg(policy_loss),
        "loss/value": sg(value_loss),
        "clip_fraction": masked_mean(clipped.astype(ratio.dtype), valid),
        "value_clip_fraction": masked_mean(value_clipped.astype(ratio.dtype), valid),
        "approx_kl": sg(masked_mean(approx_kl, valid)),
        "ratio/mean": sg(masked_mean(ratio, valid)),
        "value/mean": sg(masked_mean(values, valid)),
        "returns/mean": masked_mean(sg(returns), valid),
        "advantage/mean": masked_mean(sg(advantages), valid),
    })
    return loss, metrics
