"""The rollout engine: what every algorithm's batch builder draws on.

    rng(*stream), key(*stream)        NumPy generator / JAX key of (train.seed, *stream)
    rollout(policy, prompts, key, decode, group)
                    -> Sampled: G completions per prompt sampled on the params' mesh
                       (rollout.sample, only the task's `allowed_ids` when it has them) as
                       packed rows, and the reward mix's breakdown of the completions the
                       task decoded
    answer_rows(prompts, answers)     prompt + given answer rows (SFT targets, DPO pairs)
    pair_rows(prompts, rng)           chosen (the reference) vs rejected (corrupted) rows
    sampled_pair_rows(reference, index, dpo)
                                      chosen vs rejected rows sampled from the reference
                                      policy: best vs worst of N by the reward mix, with a
                                      margin (DPOConfig.pairs="sampled")
    score(params, rows, prefix)       teacher-forced per-token logps on the params' mesh
    evaluate(params)                  held-out rewards (sampled and greedy) and, when the
                                      params hold a reference, implicit DPO rewards on pairs

Rows and rewards are host arrays: rewards read text, and the trainer's batches are host rows.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence

import jax
import numpy as np

from chorus.config import Config, ConfigError, DecodeConfig
from chorus.model.unified import UnifiedAudioLM
from chorus.rl import rollout
from chorus.rl.dpo import DPOConfig, preference_loss, sampled_pairs
from chorus.rl.logprobs import completion_logps
from chorus.rl.rewards import RewardBreakdown, RewardMix
from chorus.rl.settings import RLSettings
from chorus.rl.task import Prompts, Task, allowed_ids
from chorus.vocab import VocabLayout

# Seed streams: every draw is seeded by (train.seed, stream[, index]), so none share numbers.
# Rollout keys of train step batches use stream 0 (key(0, rollout number)).
TRAIN_ROLLOUTS, TRAIN_PAIRS, TRAIN_ANSWERS, EVAL_ROLLOUTS, EVAL_PAIRS = 1, 2, 3, 4, 5


@dataclasses.dataclass(frozen=True, eq=False)
class Sampled:
    """One rollout: row r continues prompt r // G."""

    rows: dict[str, np.ndarray]  # packed rows (+ the prompts' audio), rollout.pack_rows
    rewards: RewardBreakdown

    def reward_fields(self) -> dict[str, np.ndarray]:
        """Per-row rewards for the batch (float32): reward/total and reward/<component>."""
        return {k: v.astype(np.float32) for k, v in self.rewards.fields().items()}


def _take_row(rows: dict[str, np.ndarray], r: int, width: int, pad_id: int
              ) -> dict[str, np.ndarray]:
    """Packed row `r` of `rows` as a batch of one, its row fields padded to `width` (pad
    tokens and targets, positions counting on, segment 0, mask 0: the pack_rows layout)."""
    out = {}
    for k, v in rows.items():
        v = v[r:r + 1]
        extra = width - v.shape[1] if k in rollout.ROW_KEYS else 0
        if extra:
            if k == "positions":
                fill = v[:, -1:] + 1 + np.arange(extra, dtype=v.dtype)
            else:
                fill = np.full((1, extra), pad_id if k in ("tokens", "targets") else 0, v.dtype)
            v = np.concatenate([v, fill], axis=1)
        out[k] = v
    return out


class RolloutEngine:
    def __init__(self, config: Config, settings: RLSettings, task: Task, group: int):
        self.config, self.settings, self.task = config, settings, task
        # Only the model's own config: runs (and evals) differing in train / experiment keys
        # then share one model hash, so jitted rollouts and scoring compile once per process.
        self.model = UnifiedAudioLM(Config(model=config.model, audio=config.audio))
        self.layout = VocabLayout.from_model_config(config.model)
        self.allowed_ids = allowed_ids(task, self.layout.size)  # None: the whole vocabulary
        self.sampling = settings.decode(task.answer_width)
        self.greedy = settings.decode(task.answer_width, greedy=True)
        rows = config.train.batch_size
        if rows % group:
            raise ConfigError(f"train.batch_size: expected a multiple of experiment.group_size="
                              f"{group} (rows = prompts x group), got {rows}")
        self.num_prompts = rows // group

    @functools.cached_property
    def rewards(self) -> RewardMix:
        """Built on first use: components holding models load them then, not at build."""
        return RewardMix(self.settings.reward_mix(), self.config)

    def width(self, prompt_width: int) -> int:
        return prompt_width + self.sampling.max_new_tokens

    def rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.config.train.seed, *stream])

    def key(self, *stream: int) -> jax.Array:
        key = jax.random.key(self.config.train.seed)
        for s in stream:
            key = jax.random.fold_in(key, s)
        return key

    def rollout(self, policy, prompts: Prompts, key: jax.Array, decode: DecodeConfig,
                group: int) -> Sampled:
        out = rollout.sample(self.model, policy, prompts.ids, prompts.lengths, key, decode,
                             group, stop_tokens=self.task.stop_tokens, audio=prompts.audio,
                             allowed_ids=self.allowed_ids)
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        completions = [self.task.decode(t[:n]) for t, n in zip(tokens, lengths, strict=True)]
        per_row = prompts.repeat(group)
        rows = rollout.pack_rows(per_row.ids, per_row.lengths, tokens, lengths,
                                 self.width(prompts.ids.shape[1]), self.layout.pad_id)
        rows.update(rollout.audio_rows(per_row.audio))
        rewards = self.rewards(per_row, completions, references=list(per_row.references))
        return Sampled(rows, rewards)

    def answer_rows(self, prompts: Prompts, answers: Sequence[str]) -> dict[str, np.ndarray]:
        ids, lengths = self.task.answers(answers)
        rows = rollout.pack_rows(prompts.ids, prompts.lengths, ids, lengths,
                                 self.width(prompts.ids.shape[1]), self.layout.pad_id)
        return {**rows, **rollout.audio_rows(prompts.audio)}

    def pair_rows(self, prompts: Prompts, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`chosen_*` rows (the reference answers) and `rejected_*` rows (corrupted with
        `rng`), sharing each prompt."""
        out = {}
        for name, answers in (("chosen", prompts.references),
                              ("rejected", self.task.corrupt(prompts.references, rng))):
            out.update({f"{name}_{k}": v for k, v in self.answer_rows(prompts, answers).items()})
        return out

    def sampled_pair_rows(self, reference, index: int, config: DPOConfig
                          ) -> dict[str, np.ndarray]:
        """`num_prompts` pairs for train batch `index`: `config.samples` completions per prompt
        from `reference`, the best (chosen_*) vs the worst (rejected_*) by the mix's total
        where they differ by >= `config.margin` (`dpo.sampled_pairs`).

        Prompts without such a gap are dropped and counted. The batch keeps its shape: up to
        `config.refill_rounds` draws of `num_prompts` prompts fill it; rows still unfilled
        repeat one sampled row as both chosen and rejected with `pair_weight` 0 (the loss
        ignores them). Per-row fields: pair_weight, pairs/gap (the reward gap; 0 when
        masked), pairs/chosen_reward, pairs/rejected_reward; pairs/kept (the share of filled
        rows) and pairs/dropped (prompts drawn without a gap) repeated on every row."""
        n, picked, drawn, dropped, rows = self.num_prompts, [], 0, 0, None
        for round_ in range(config.refill_rounds):
            prompts = self.task.prompts("train", self.rng(TRAIN_PAIRS, index, round_), n)
            sampled = self.rollout(reference, prompts, self.key(TRAIN_PAIRS, index, round_),
                                   self.sampling, config.samples)
            total, rows = sampled.rewards.total, sampled.rows
            keep, best, worst = sampled_pairs(total, config.samples, config.margin)
            take = min(len(keep), n - len(picked))
            # the prompts looked at this round: all, or up to the last one used
            seen = n if take == len(keep) else int(keep[take - 1]) + 1
            drawn, dropped = drawn + seen, dropped + seen - take
            picked += [(rows, int(b), int(w), float(total[b]), float(total[w]))
                       for b, w in zip(best[:take], worst[:take], strict=True)]
            if len(picked) == n:
                break
        kept = len(picked)
        if kept < n:
            if not kept:
                warnings.warn(f"DPO sampled pairs, batch {index}: none of {drawn} prompts had a "
                              f"reward gap >= dpo.margin={config.margin} between its "
                              f"{config.samples} samples; the batch is masked (no update)",
                              stacklevel=2)
            picked += [(rows, 0, 0, 0.0, 0.0)] * (n - kept)
        width = max(r["tokens"].shape[1] for r, *_ in picked)
        out = {}
        for name, col in (("chosen", 1), ("rejected", 2)):
            taken = [_take_row(p[0], p[col], width, self.layout.pad_id) for p in picked]
            out.update({f"{name}_{k}": np.concatenate([t[k] for t in taken])
                        for k in taken[0]})
        weight = (np.arange(n) < kept).astype(np.float32)
        chosen_reward = np.array([p[3] for p in picked], np.float32) * weight
        rejected_reward = np.array([p[4] for p in picked], np.float32) * weight
        return {**out, "pair_weight": weight, "pairs/gap": chosen_reward - rejected_reward,
                "pairs/chosen_reward": chosen_reward, "pairs/rejected_reward": rejected_reward,
                "pairs/kept": np.full(n, kept / n, np.float32),
                "pairs/dropped": np.full(n, dropped, np.float32)}

    def score(self, params, rows: dict, prefix: str = "") -> np.ndarray:
        return rollout.score(self.model, params, rollout.forward_fields(rows, prefix), prefix)

    # ------------------------------------------------------------------ held-out evaluation

    def evaluate(self, params) -> dict[str, float]:
        """Held-out scores of params {"policy", ["reference"], ...} on their own mesh."""
        policy, n, out = params["policy"], self.settings.eval_prompts, {}
        for label, decode in (("sampled", self.sampling), ("greedy", self.greedy)):
            prompts = self.task.prompts("eval", self.rng(EVAL_ROLLOUTS), n)
            sampled = self.rollout(policy, prompts, self.key(EVAL_ROLLOUTS, 0), decode, 1)
            out.update({f"heldout/{label}/{k}": v for k, v in sampled.rewards.metrics().items()})
        if "reference" in params:  # the DPO view: implicit rewards on held-out pairs
            rng = self.rng(EVAL_PAIRS)
            rows = self.pair_rows(self.task.prompts("eval", rng, n), rng)
            logps = {f"{who}_{name}": completion_logps(
                self.score(p, rows, f"{name}_"), rows[f"{name}_mask"], average=False)
                for who, p in (("policy", policy), ("ref", params["reference"]))
                for name in ("chosen", "rejected")}
            _, metrics = preference_loss(logps["policy_chosen"], logps["policy_rejected"],
                                         logps["ref_chosen"], logps["ref_rejected"],
                                         self.settings.dpo)
            out.update({f"heldout/pairs/{k}": float(v) for k, v in metrics.items()})
        return out
