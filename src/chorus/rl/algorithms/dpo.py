"""DPO against the frozen reference policy (its logps computed when the batch is built), on
preference pairs from one of two sources (`experiment.dpo.pairs`):

    reference  chosen = the task's reference answer, rejected = a corrupted one
    sampled    `dpo.samples` completions per prompt from the reference policy, scored by the
               reward mix: best vs worst when their gap is >= `dpo.margin` (prompts without
               one are dropped and counted; unfilled rows are masked, `pair_weight` 0)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chorus.config import check
from chorus.rl import rollout
from chorus.rl.algorithms.base import Algorithm, register_algorithm
from chorus.rl.dpo import dpo_loss
from chorus.rl.engine import TRAIN_PAIRS
from chorus.rl.masked import masked_mean

PAIR_METRICS = ("pairs/gap", "pairs/chosen_reward", "pairs/rejected_reward")  # kept rows' mean
PAIR_COUNTS = ("pairs/kept", "pairs/dropped")  # the same on every row


@register_algorithm("dpo")
class DPO(Algorithm):
    def __init__(self, settings):
        super().__init__(settings)
        cfg = settings.dpo
        # the mix's group z-score groups rows by group_size: for sampled pairs those are the
        # dpo.samples completions of one prompt
        check(cfg.pairs != "sampled" or settings.reward_normalization != "group"
              or settings.group_size == cfg.samples, "experiment.group_size",
              f"= experiment.dpo.samples ({cfg.samples}) with reward_normalization=group and "
              "dpo.pairs=sampled", settings.group_size)
        check(cfg.pairs != "sampled" or settings.temperature > 0, "experiment.temperature",
              "> 0 for dpo.pairs=sampled (greedy samples of a prompt are all alike)",
              settings.temperature)

    def batch(self, engine, params, index):
        cfg = self.settings.dpo
        if cfg.pairs == "sampled":
            rows = engine.sampled_pair_rows(params["reference"], index, cfg)
        else:
            rng = engine.rng(TRAIN_PAIRS, index)
            rows = engine.pair_rows(engine.task.prompts("train", rng, engine.num_prompts), rng)
        for name in ("chosen", "rejected"):
            rows[f"ref_{name}_logps"] = engine.score(params["reference"], rows, f"{name}_")
        return rows

    def loss(self, model, params, batch):
        logps = {n: rollout.token_logps(model, params["policy"], batch, f"{n}_")
                 for n in ("chosen", "rejected")}
        weights = batch.get("pair_weight")  # None: every row is a pair
        loss, metrics = dpo_loss(logps["chosen"], logps["rejected"], batch["ref_chosen_logps"],
                                 batch["ref_rejected_logps"], batch["chosen_mask"],
                                 batch["rejected_mask"], self.settings.dpo, weights)
        mask = batch["chosen_mask"] if weights is None else (
            batch["chosen_mask"] * weights[:, None])
        kl = masked_mean(logps["chosen"] - batch["ref_chosen_logps"], mask)
        metrics = {**metrics, "kl": jax.lax.stop_gradient(kl)}
        if weights is not None:
            kept = jnp.maximum(jnp.sum(weights), 1e-9)
            metrics.update({k: jnp.sum(batch[k] * weights) / kept for k in PAIR_METRICS})
            metrics.update({k: jnp.mean(batch[k]) for k in PAIR_COUNTS})
        return loss, metrics
