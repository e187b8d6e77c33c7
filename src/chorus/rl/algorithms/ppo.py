"""PPO with a value head on the policy's hidden states: per-token KL-shaped rewards, GAE
advantages and returns, the clipped policy + clipped value loss (− an entropy bonus)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from chorus.rl import rollout, value_head
from chorus.rl.algorithms.base import OnPolicyAlgorithm, register_algorithm, reward_metrics
from chorus.rl.logprobs import sequence_logprobs
from chorus.rl.ppo import kl_shaped_rewards, ppo_advantages, ppo_loss


@functools.partial(jax.jit, static_argnames=("model",))
def _old_policy(model, params, rows):
    """The rollout policy's logps, its value head's values and the reference's logps on the
    rows: one program."""
    out = rollout.forward(model, params["policy"], rows)
    return {"old_logps": sequence_logprobs(out["logits"], rows["targets"], rows["mask"]),
            "old_values": value_head.values(params["value_head"], out["hidden"]) * rows["mask"],
            "ref_logps": rollout.token_logps(model, params["reference"], rows)}


@functools.partial(jax.jit, static_argnames=("cfg",))
def _gae(cfg, scores, old_logps, ref_logps, old_values, mask):
    rewards, kl = kl_shaped_rewards(scores, old_logps, ref_logps, mask, cfg.kl_coef,
                                    cfg.kl_estimator)
    advantages, returns = ppo_advantages(rewards, old_values, mask, cfg)
    kl_row = jnp.sum(kl, -1) / jnp.maximum(jnp.sum(mask, -1), 1.0)
    return {"advantages": advantages, "returns": returns, "kl_row": kl_row}


@register_algorithm("ppo")
class PPO(OnPolicyAlgorithm):
    def __init__(self, settings):
        super().__init__(settings)
        self.config = settings.ppo

    def extra_params(self, rng, config):
        return {"value_head": value_head.init_value_head(rng, config.model.d_model)}

    def score(self, engine, params, rows):
        out = rollout.on_params_mesh(
            _old_policy, engine.model,
            {k: params[k] for k in ("policy", "value_head", "reference")},
            rollout.forward_fields(rows))
        return jax.device_get(out)

    def advantages(self, batch, rewards):
        out = _gae(self.config, jnp.asarray(rewards, jnp.float32), batch["old_logps"],
                   batch["ref_logps"], batch["old_values"], batch["mask"])
        return {k: np.asarray(v) for k, v in out.items()}

    def loss(self, model, params, batch):
        cfg = self.config
        out = rollout.forward(model, params["policy"], batch)
        logps = sequence_logprobs(out["logits"], batch["targets"], batch["mask"])
        values = value_head.values(params["value_head"], out["hidden"]) * batch["mask"]
        loss, metrics = ppo_loss(logps, batch["old_logps"], batch["advantages"],
                                 batch["returns"], values, batch["old_values"], batch["mask"],
                                 cfg, out["logits"] if cfg.entropy_coef > 0 else None)
        return loss, {**metrics, "kl": jnp.mean(batch["kl_row"]), **reward_metrics(batch)}
