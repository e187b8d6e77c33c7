"""Direct preference optimization losses (DPO, label-smoothed DPO, IPO, hinge).

With h = (logπ(y_w) − logπ_ref(y_w)) − (logπ(y_l) − logπ_ref(y_l)):
    sigmoid  −(1−ε)·log σ(βh) − ε·log σ(−βh)        (ε = label_smoothing; ε = 0 is plain DPO)
    hinge    relu(1 − βh)
    ipo      (h − 1/(2β))²  with token-averaged logps
Completion logps are summed over tokens, except IPO which averages them. Rows may be weighted
(0 = a masked row that keeps the batch's shape: a prompt without a sampled pair).

Pairs (`DPOConfig.pairs`): "reference" = the task's reference answer vs a corrupted one;
"sampled" = `samples` completions per prompt from the reference policy, scored by the reward
mix, best vs worst where their reward gap is >= `margin` (`sampled_pairs`).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import check
from chorus.rl.logprobs import completion_logps
from chorus.rl.shapes import require_shape

DPOLossType = Literal["sigmoid", "hinge", "ipo"]
DPO_LOSS_TYPES: tuple[str, ...] = typing.get_args(DPOLossType)
DPOPairs = Literal["reference", "sampled"]
DPO_PAIRS: tuple[str, ...] = typing.get_args(DPOPairs)


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1
    loss_type: DPOLossType = "sigmoid"
    label_smoothing: float = 0.0  # ε: assumed probability that a preference label is flipped
    pairs: DPOPairs = "reference"  # where the pairs come from (see the module docstring)
    samples: int = 4  # "sampled": completions per prompt (N)
    margin: float = 0.1  # "sampled": least reward gap (total of the mix) of a kept pair
    refill_rounds: int = 4  # "sampled": most prompt draws per batch to fill its pairs

    def __post_init__(self):
        check(self.beta > 0, "dpo.beta", "a positive number", self.beta)
        check(self.loss_type in DPO_LOSS_TYPES, "dpo.loss_type",
              f"one of {list(DPO_LOSS_TYPES)}", self.loss_type)
        check(0.0 <= self.label_smoothing < 0.5, "dpo.label_smoothing", "a value in [0, 0.5)",
              self.label_smoothing)
        check(self.label_smoothing == 0.0 or self.loss_type == "sigmoid", "dpo.label_smoothing",
              "0 unless dpo.loss_type is 'sigmoid'", self.label_smoothing)
        check(self.pairs in DPO_PAIRS, "dpo.pairs", f"one of {list(DPO_PAIRS)}", self.pairs)
        check(isinstance(self.samples, int) and self.samples >= 2, "dpo.samples",
              "an int >= 2 (a pair needs two completions)", self.samples)
        # > 0: a zero margin would "pair" two completions of equal reward (no preference)
        check(self.margin > 0 and np.isfinite(self.margin), "dpo.margin", "a number > 0",
              self.margin)
        check(isinstance(self.refill_rounds, int) and self.refill_rounds >= 1,
              "dpo.refill_rounds", "an int >= 1", self.refill_rounds)

    @property
    def averages_tokens(self) -> bool:
        return self.loss_type == "ipo"


def sampled_pairs(rewards: np.ndarray, samples: int, margin: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best-vs-worst pairs of `samples` completions per prompt (rows i*N .. i*N+N-1 belong to
    prompt i) by reward [n*N]: (prompt indices kept, their chosen rows, their rejected rows),
    keeping the prompts whose best and worst reward differ by >= margin (ties: the first row
    of the best / worst reward)."""
    rewards = np.asarray(rewards, np.float64)
    if rewards.ndim != 1 or rewards.size % samples:
        raise ValueError(f"rewards: expected [n * {samples}] (samples per prompt), got shape "
                         f"{rewards.shape}")
    grouped = rewards.reshape(-1, samples)
    best, worst = grouped.argmax(1), grouped.argmin(1)
    rows = np.arange(grouped.shape[0])
    keep = np.flatnonzero(grouped[rows, best] - grouped[rows, worst] >= margin)
    return keep, keep * samples + best[keep], keep * samples + worst[keep]


def _mean(x: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.mean(x)
    return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1e-9)


def preference_loss(chosen_logps: jax.Array, rejected_logps: jax.Array,
                    ref_chosen_logps: jax.Array, ref_rejected_logps: jax.Array,
                    config: DPOConfig, weights: jax.Array | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO-family loss from sequence-level logps [B] (already summed or averaged): the mean
    over rows, or their `weights`-weighted mean (0 where every weight is 0: no pair, no
    gradient); the metrics are averaged the same way."""
    for name, x in (("chosen_logps", chosen_logps), ("rejected_logps", rejected_logps),
                    ("ref_chosen_logps", ref_chosen_logps),
                    ("ref_rejected_logps", ref_rejected_logps)):
        require_shape(name, x.shape, chosen_logps.shape[:1])
    if weights is not None:
        require_shape("weights", weights.shape, chosen_logps.shape[:1])
    chosen_delta = chosen_logps - jax.lax.stop_gradient(ref_chosen_logps)
    rejected_delta = rejected_logps - jax.lax.stop_gradient(ref_rejected_logps)
    h = chosen_delta - rejected_delta
    beta = config.beta
    if config.loss_type == "sigmoid":
        eps = config.label_smoothing
        losses = -(1.0 - eps) * jax.nn.log_sigmoid(beta * h) - eps * jax.nn.log_sigmoid(-beta * h)
    elif config.loss_type == "hinge":
        losses = jax.nn.relu(1.0 - beta * h)
    else:  # ipo
        losses = jnp.square(h - 1.0 / (2.0 * beta))
    # Implicit rewards β·(logπ − logπ_ref), in the same reduction (sum or mean) the loss used.
    chosen_reward = jax.lax.stop_gradient(beta * chosen_delta)
    rejected_reward = jax.lax.stop_gradient(beta * rejected_delta)
    mean = lambda x: _mean(x, weights)
    metrics = {
        "loss": mean(losses),
        "rewards/chosen": mean(chosen_reward),
        "rewards/rejected": mean(rejected_reward),
        "rewards/margin": mean(chosen_reward - rejected_reward),
        "rewards/accuracy": mean((chosen_reward > rejected_reward).astype(jnp.float32)),
        "logps/chosen": mean(jax.lax.stop_gradient(chosen_logps)),
        "logps/rejected": mean(jax.lax.stop_gradient(rejected_logps)),
    }
    return metrics["loss"], metrics


def dpo_loss(chosen_token_logps: jax.Array, rejected_token_logps: jax.Array,
             ref_chosen_token_logps: jax.Array, ref_rejected_token_logps: jax.Array,
             chosen_mask: jax.Array, rejected_mask: jax.Array,
             config: DPOConfig, weights: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO-family loss from per-token logps [B, L] of policy and reference and completion masks.

    Chosen and rejected may have different lengths; each reference array matches its policy one.
    """
    require_shape("ref_chosen_token_logps", ref_chosen_token_logps.shape,
                  chosen_token_logps.shape)
    require_shape("ref_rejected_token_logps", ref_rejected_token_logps.shape,
                  rejected_token_logps.shape)
    avg = config.averages_tokens
    return preference_loss(
        completion_logps(chosen_token_logps, chosen_mask, average=avg),
        completion_logps(rejected_token_logps, rejected_mask, average=avg),
        completion_logps(ref_chosen_token_logps, chosen_mask, average=avg),
        completion_logps(ref_rejected_token_logps, rejected_mask, average=avg),
        config, weights,
    )
