"""DPO on the task's preference pairs: chosen = the reference answer, rejected = a corrupted
one, against the frozen reference policy (its logps computed when the batch is built)."""

from __future__ import annotations

import jax

from chorus.rl import rollout
from chorus.rl.algorithms.base import Algorithm, register_algorithm
from chorus.rl.dpo import dpo_loss
from chorus.rl.engine import TRAIN_PAIRS
from chorus.rl.masked import masked_mean


@register_algorithm("dpo")
class DPO(Algorithm):
    def batch(self, engine, params, index):
        rng = engine.rng(TRAIN_PAIRS, index)
        rows = engine.pair_rows(engine.task.prompts("train", rng, engine.num_prompts), rng)
        for name in ("chosen", "rejected"):
            rows[f"ref_{name}_logps"] = engine.score(params["reference"], rows, f"{name}_")
        return rows

    def loss(self, model, params, batch):
        logps = {n: rollout.token_logps(model, params["policy"], batch, f"{n}_")
                 for n in ("chosen", "rejected")}
        loss, metrics = dpo_loss(logps["chosen"], logps["rejected"], batch["ref_chosen_logps"],
                                 batch["ref_rejected_logps"], batch["chosen_mask"],
                                 batch["rejected_mask"], self.settings.dpo)
        kl = masked_mean(logps["chosen"] - batch["ref_chosen_logps"], batch["chosen_mask"])
        return loss, {**metrics, "kl": jax.lax.stop_gradient(kl)}
