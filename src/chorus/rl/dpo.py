"""Direct preference optimization losses (DPO, label-smoothed DPO, IPO, hinge).

With h = (logπ(y_w) − logπ_ref(y_w)) − (logπ(y_l) − logπ_ref(y_l)):
    sigmoid  −(1−ε)·log σ(βh) − ε·log σ(−βh)        (ε = label_smoothing; ε = 0 is plain DPO)
    hinge    relu(1 − βh)
    ipo      (h − 1/(2β))²  with token-averaged logps
Completion logps are summed over tokens, except IPO which averages them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import jax
import jax.numpy as jnp

from chorus.config import check
from chorus.rl.logprobs import completion_logps
from chorus.rl.shapes import require_shape

DPOLossType = Literal["sigmoid", "hinge", "ipo"]
DPO_LOSS_TYPES: tuple[str, ...] = typing.get_args(DPOLossType)


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1
    loss_type: DPOLossType = "sigmoid"
    label_smoothing: float = 0.0  # ε: assumed probability that a preference label is flipped

    def __post_init__(self):
        check(self.beta > 0, "dpo.beta", "a positive number", self.beta)
        check(self.loss_type in DPO_LOSS_TYPES, "dpo.loss_type",
              f"one of {list(DPO_LOSS_TYPES)}", self.loss_type)
        check(0.0 <= self.label_smoothing < 0.5, "dpo.label_smoothing", "a value in [0, 0.5)",
              self.label_smoothing)
        check(self.label_smoothing == 0.0 or self.loss_type == "sigmoid", "dpo.label_smoothing",
              "0 unless dpo.loss_type is 'sigmoid'", self.label_smoothing)

    @property
    def averages_tokens(self) -> bool:
        return self.loss_type == "ipo"


def preference_loss(chosen_logps: jax.Array, rejected_logps: jax.Array,
                    ref_chosen_logps: jax.Array, ref_rejected_logps: jax.Array,
                    config: DPOConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean DPO-family loss from sequence-level logps [B] (already summed or averaged)."""
    for name, x in (("chosen_logps", chosen_logps), ("rejected_logps", rejected_logps),
                    ("ref_chosen_logps", ref_chosen_logps),
                    ("ref_rejected_logps", ref_rejected_logps)):
        require_shape(name, x.shape, chosen_logps.shape[:1])
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
    metrics = {
        "loss": jnp.mean(losses),
        "rewards/chosen": jnp.mean(chosen_reward),
        "rewards/rejected": jnp.mean(rejected_reward),
        "rewards/margin": jnp.mean(chosen_reward - rejected_reward),
        "rewards/accuracy": jnp.mean((chosen_reward > rejected_reward).astype(jnp.float32)),
        "logps/chosen": jnp.mean(jax.lax.stop_gradient(chosen_logps)),
        "logps/rejected": jnp.mean(jax.lax.stop_gradient(rejected_logps)),
    }
    return jnp.mean(losses), metrics


def dpo_loss(chosen_token_logps: jax.Array, rejected_token_logps: jax.Array,
             ref_chosen_token_logps: jax.Array, ref_rejected_token_logps: jax.Array,
             chosen_mask: jax.Array, rejected_mask: jax.Array,
             config: DPOConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
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
        config,
    )
