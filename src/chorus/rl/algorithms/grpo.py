"""GRPO: G samples per prompt, group-relative advantages of the total reward, the clipped
ratio loss against the rollout policy with a KL penalty to the reference."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from chorus.config import check
from chorus.rl import rollout
from chorus.rl.algorithms.base import OnPolicyAlgorithm, register_algorithm, reward_metrics
from chorus.rl.grpo import group_advantages, grpo_loss


@register_algorithm("grpo")
class GRPO(OnPolicyAlgorithm):
    def __init__(self, settings):
        super().__init__(settings)
        check(settings.group_size >= 2, "experiment.group_size",
              "an int >= 2 (GRPO's baseline is the group's other samples)", settings.group_size)
        self.config = settings.grpo

    def score(self, engine, params, rows):
        return {"old_logps": engine.score(params["policy"], rows),
                "ref_logps": engine.score(params["reference"], rows)}

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
