"""GRPO: G samples per prompt, group-relative advantages of the total reward, the clipped
ratio loss against the rollout policy with a KL penalty to the reference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import check
from chorus.rl import rollout
from chorus.rl.algorithms.base import OnPolicyAlgorithm, register_algorithm, reward_metrics
from chorus.rl.grpo import group_advantages, grpo_loss


@functools.partial(jax.jit, static_argnames=("model",))
def _rollout_logps(model, params, rows):
    """The rollout policy's and the reference's per-token logps on the rows: one program."""
    return {"old_logps": rollout.token_logps(model, params["policy"], rows),
            "ref_logps": rollout.token_logps(model, params["reference"], rows)}


@register_algorithm("grpo")
class GRPO(OnPolicyAlgorithm):
    def __init__(self, settings):
        super().__init__(settings)
        check(settings.group_size >= 2, "experiment.group_size",
              "an int >= 2 (GRPO's baseline is the group's other samples)", settings.group_size)
        self.config = settings.grpo

    def score(self, engine, params, rows):
        out = rollout.on_params_mesh(_rollout_logps, engine.model,
                                     {k: params[k] for k in ("policy", "reference")},
                                     rollout.forward_fields(rows))
        return jax.device_get(out)

    def advantages(self, batch, rewards):
        cfg = self.config
        adv = group_advantages(jnp.asarray(rewards, jnp.float32), self.group_size,
                               baseline=cfg.baseline, normalize_std=cfg.normalize_std,
                               eps=cfg.adv_eps)
        return {"advantages": np.asarray(adv)}

    def loss(self, model, params, batch):
        logps = rollout.token_logps(model, params["policy"], batch)
        loss, metrics = grpo_loss(logps, batch["old_logps"], batch["ref_logps"],
                                  batch["advantages"], batch["mask"], self.config)
        return loss, {**metrics, **reward_metrics(batch)}
