"""The supervised warm-up: cross-entropy on the task's reference answers (no reference policy,
no sampling; batches need no params)."""

from __future__ import annotations

from chorus.model.losses import cross_entropy, token_accuracy
from chorus.rl import rollout
from chorus.rl.algorithms.base import Algorithm, register_algorithm
from chorus.rl.engine import TRAIN_ANSWERS


@register_algorithm("sft")
class SFT(Algorithm):
    reference = False
    needs_params = False

    def batch(self, engine, params, index):
        prompts = engine.task.prompts("train", engine.rng(TRAIN_ANSWERS, index),
                                      engine.num_prompts)
        return engine.answer_rows(prompts, prompts.references)

    def loss(self, model, params, batch):
        out = rollout.forward(model, params["policy"], batch)
        loss, count = cross_entropy(out["logits"], batch["targets"], batch["mask"])
        return loss, {"accuracy": token_accuracy(out["logits"], batch["targets"], batch["mask"]),
                      "target_tokens": count}
