"""`chorus train --experiment reward_model`: the Bradley-Terry reward model's regime.

    data     pairs generated in Python from persona cards (experiments/judge/labels.py
             `make_pair`): row r of step s is a pure function of (seed, split, s, r), so any
             split over hosts sees the same global batch and a resume continues exactly
             (state: the step). A row holds both exchanges, [2, seq_len]: consistent first
    model    the shared backbone + a scalar head, its own params {"backbone", "reward_head"};
             text only
    loss     -log sigmoid(r(consistent) - r(perturbed)), plus center_weight * mean(r)^2: the
             Bradley-Terry loss fixes only differences, the small pull keeps sigmoid(r) (the RL
             reward) near 0.5 on average
    eval     the loss on held-out personas with every perturbation type (held-out ones too);
             `chorus eval`: the accuracy tables (experiments/reward_model/evaluate.py)
    assets   the tokenizer, so scoring needs the run directory alone
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import Config, ConfigError
from chorus.model.factory import backbone_init
from chorus.model.flops import backbone_train_flops
from chorus.model.unified import UnifiedAudioLM
from chorus.rl.value_head import init_value_head
from chorus.training.evaluation import evaluate_loss
from chorus.training.experiment import Experiment
from chorus.vocab import VocabLayout
from data_pipelines.tokenizer import tokenizer_assets
from experiments.judge.experiment import PersonaLabelBatches, load_tokenizer
from experiments.judge.labels import PairExample, consistent_and_perturbed, make_pair
from experiments.judge.prompt import judge_prompt
from experiments.judge.scoring import padded_rows
from experiments.reward_model.scoring import exchange_rewards
from experiments.reward_model.settings import reward_model_settings

TRAIN, EVAL = 0, 1  # the rng stream of each split
CENTER_WEIGHT = 0.01


class PairBatches(PersonaLabelBatches):
    """Generated pairs of the trained perturbation types (every type at eval)."""

    def pair(self, step: int, row: int) -> PairExample:
        rng = self.row_rng(step, row)
        kind = self.perturbations[int(rng.integers(len(self.perturbations)))]
        return make_pair(rng, kind, self.lexicon)

    def _row(self, step: int, row: int) -> dict[str, np.ndarray]:
        p = self.pair(step, row)
        card = p.persona.card()
        prompts = [judge_prompt(self.layout, self.encode, card, p.question, a)
                   for a in consistent_and_perturbed(p)]
        try:
            return padded_rows(prompts, self.seq_len, self.layout.pad_id)
        except ValueError as e:
            raise ConfigError(f"train.seq_len: {e}") from None


def bradley_terry_loss(rewards: jax.Array, center_weight: float = CENTER_WEIGHT) -> jax.Array:
    """rewards [B, 2] (consistent, perturbed) -> mean -log sigmoid(r0 - r1) + center_weight *
    mean(r)^2."""
    margin = rewards[:, 0] - rewards[:, 1]
    return jnp.mean(jax.nn.softplus(-margin)) + center_weight * jnp.mean(rewards) ** 2


def reward_model_loss(model: UnifiedAudioLM):
    def loss_fn(params, batch, rng):
        b = batch["tokens"].shape[0]
        flat = {k: v.reshape(2 * b, *v.shape[2:]) for k, v in batch.items()}
        rewards = exchange_rewards(model, params, flat).reshape(b, 2)
        loss = bradley_terry_loss(rewards)
        margin = rewards[:, 0] - rewards[:, 1]
        metrics = {"accuracy": jnp.mean((margin > 0).astype(jnp.float32)),
                   "margin": jnp.mean(margin), "mean_reward": jnp.mean(rewards)}
        return loss, {**jax.tree.map(jax.lax.stop_gradient, metrics), "loss": loss}

    return loss_fn


def build(config: Config) -> Experiment:
    settings = reward_model_settings(config)
    layout = VocabLayout.from_model_config(config.model)
    model = UnifiedAudioLM(config)
    backbone = backbone_init(model, config)
    t = config.train
    loss_fn = reward_model_loss(model)

    def init_fn(rng):
        trunk, head = jax.random.split(rng)
        return {"backbone": backbone(trunk),
                "reward_head": init_value_head(head, config.model.d_model)}

    def iterator(split: int):
        def make(shard_index: int, shard_count: int, seed: int) -> PairBatches:
            return PairBatches(config, settings, load_tokenizer(settings, layout), split,
                               shard_index, shard_count, seed)

        return make

    def evaluate(params, workdir: str) -> dict:
        from chorus.atomic import write_json, write_text
        from experiments.reward_model.evaluate import accuracy_tables, report_markdown
        from experiments.reward_model.scoring import RewardModelScorer

        tokenizer = load_tokenizer(settings, layout, workdir)
        batches = PairBatches(config, settings, tokenizer, EVAL, jax.process_index(),
                              jax.process_count(), t.seed)
        result = {"loss": evaluate_loss(loss_fn, params, batches, max_batches=t.eval_steps)}
        scorer = RewardModelScorer(model, params, tokenizer, settings)
        result.update(accuracy_tables(scorer, settings, seed=t.seed))
        if jax.process_index() == 0:
            write_json(os.path.join(workdir, "eval", "reward_model_eval.json"), result)
            write_text(os.path.join(workdir, "eval", "reward_model_eval.md"),
                       report_markdown(result))
        return result

    return Experiment(
        name="reward_model", init_fn=init_fn, loss_fn=loss_fn,
        train_iterator=iterator(TRAIN), eval_iterator=iterator(EVAL), evaluate=evaluate,
        flops_per_batch=backbone_train_flops(config, 2 * t.batch_size, t.seq_len, 0,
                                             t.max_mel_frames),
        tokens_per_batch=2 * t.batch_size * t.seq_len,
        assets=tokenizer_assets(settings.data_dir))
