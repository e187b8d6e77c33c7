"""An RL (or SFT warm-up) `Experiment` over any verifiable `Task`, run by the one Trainer.

    params     {"policy": backbone, "reference": frozen copy, ["value_head": PPO critic]}
    batches    an on-policy source: the Trainer hands it the current params (policy_sink)
               before each step; every `updates_per_rollout` steps it samples a rollout
               (rollout.sample), scores it teacher-forced with the same apply function under
               policy / reference params (rollout.score), computes rewards (rewards.py) and the
               algorithm's advantages; DPO batches are the task's preference pairs instead.
    loss       grpo_loss | ppo_loss (+ value head) | dpo_loss on the packed rows
    evaluate   held-out reward (sampled and greedy) and, for DPO, the implicit-reward margin and
               accuracy on held-out pairs

Rollouts run on the host's default device from a host copy of the params (single-host; fine
for the tiny demonstrations, a sharded rollout engine is future work). Resuming restores the
rollout counter; a resume in the middle of an `updates_per_rollout` cycle re-samples the
cycle's rollout from the restored params.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import Config, ConfigError
from chorus.model.factory import example_batch
from chorus.model.losses import cross_entropy, token_accuracy
from chorus.model.unified import UnifiedAudioLM
from chorus.rl import rollout, value_head
from chorus.rl.dpo import DPOConfig, dpo_loss, preference_loss
from chorus.rl.grpo import GRPOConfig, group_advantages, grpo_loss
from chorus.rl.init_from import with_values
from chorus.rl.logprobs import completion_logps, sequence_logprobs
from chorus.rl.masked import masked_mean
from chorus.rl.ppo import PPOConfig, kl_shaped_rewards, ppo_advantages, ppo_loss
from chorus.rl.rewards import compute_rewards
from chorus.rl.settings import RLSettings
from chorus.training.experiment import Experiment
from chorus.vocab import VocabLayout


class Task(Protocol):
    """A verifiable task: prompts (optionally with audio clips) with reference answers, a
    decoder, preference pairs.

    Arrays are right-padded int32; `split` is "train" or "eval" (held-out, disjoint)."""

    name: str
    answer_width: int  # max answer tokens, <eos> included

    def prompts(self, split: str, rng: np.random.Generator, n: int
                ) -> tuple[np.ndarray, np.ndarray, list[str], dict | None]:
        """(prompts [n, P], lengths [n], references, audio): audio is None for text-only
        tasks, else {"audio_features" [n, A, T, mels], "audio_mask" [n, A, T]}."""

    def answers(self, references: list[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def corrupt(self, references: list[str], rng: np.random.Generator) -> list[str]: ...

    def decode(self, ids: np.ndarray, length: int) -> str: ...


# ----------------------------------------------------------------------------- batches


class OnPolicySource:
    """A resumable train iterator whose batches are made from the params it last received."""

    def __init__(self, make_batch: Callable[[Any, int], dict], updates_per_rollout: int = 1):
        self._make, self._k = make_batch, updates_per_rollout
        self._params = None
        self._index = 0  # batches handed out
        self._cached: dict | None = None

    def receive(self, params) -> None:
        self._params = jax.device_get(params)  # host copy: rollouts run on the default device

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._params is None:
            raise RuntimeError("OnPolicySource: no params received; the trainer calls "
                               "experiment.policy_sink(params) before each batch")
        if self._index % self._k == 0 or self._cached is None:
            self._cached = self._make(self._params, self._index // self._k)
        self._index += 1
        return self._cached

    def get_state(self) -> dict:
        return {"index": self._index}

    def set_state(self, state: dict) -> None:
        self._index, self._cached = int(state["index"]), None


def _np_rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _repeat(items: list, times: int) -> list:
    return [x for x in items for _ in range(times)]


class Builder:
    """Everything that turns (params, rollout number) into a batch, and held-out scores."""

    def __init__(self, config: Config, settings: RLSettings, task: Task):
        self.config, self.settings, self.task = config, settings, task
        # Only the model's own config: runs (and evals) differing in train / experiment keys
        # then share one model hash, so jitted rollouts and scoring compile once per process.
        self.model = UnifiedAudioLM(Config(model=config.model, audio=config.audio))
        self.layout = VocabLayout.from_model_config(config.model)
        self.pad_id = self.layout.pad_id
        self.mix = settings.reward_mix()
        self.algo_config = settings.algo_config()
        self.sampling = settings.decode(task.answer_width)
        self.greedy = settings.decode(task.answer_width, greedy=True)
        self.group = settings.group_size if settings.algo in ("grpo", "ppo") else 1
        rows = config.train.batch_size
        if rows % self.group:
            raise ConfigError(f"train.batch_size: expected a multiple of experiment.group_size="
                              f"{self.group} (rows = prompts x group), got {rows}")
        self.num_prompts = rows // self.group

    def width(self, prompt_width: int) -> int:
        return prompt_width + self.sampling.max_new_tokens

    def _rollout_key(self, index: int, stream: int = 0) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.config.train.seed),
                                                     stream), index)

    def sample_and_reward(self, policy, split: str, rng: np.random.Generator, n: int,
                          key: jax.Array, settings, group: int):
        prompts, lengths, refs, audio = self.task.prompts(split, rng, n)
        out = rollout.sample(self.model, policy, prompts, lengths, key, settings, group,
                             audio=audio)
        rows = rollout.pack_rows(np.repeat(prompts, group, 0), np.repeat(lengths, group),
                                 np.asarray(out.tokens), np.asarray(out.lengths),
                                 self.width(prompts.shape[1]), self.pad_id)
        rows.update(rollout.audio_rows(audio, group))
        texts = [self.task.decode(t, n_) for t, n_ in zip(np.asarray(out.tokens),
                                                          np.asarray(out.lengths), strict=True)]
        prompt_texts = _repeat([self.task.decode(p, n_) for p, n_ in zip(prompts, lengths,
                                                                         strict=True)], group)
        rewards = compute_rewards(self.mix, prompt_texts, texts, references=_repeat(refs, group))
        return rows, rewards

    def _reward_fields(self, rewards) -> dict[str, np.ndarray]:
        fields = {"reward/total": rewards.total.astype(np.float32)}
        fields.update({f"reward/{k}": v.astype(np.float32) for k, v in rewards.components.items()})
        return fields

    def grpo_batch(self, params, index: int) -> dict:
        cfg: GRPOConfig = self.algo_config
        rows, rewards = self.sample_and_reward(
            params["policy"], "train", _np_rng(self.config.train.seed, 1, index),
            self.num_prompts, self._rollout_key(index), self.sampling, self.group)
        old = rollout.score(self.model, params["policy"], rows)
        ref = rollout.score(self.model, params["reference"], rows)
        adv = group_advantages(jnp.asarray(rewards.total, jnp.float32), cfg.group_size,
                               baseline=cfg.baseline, normalize_std=cfg.normalize_std,
                               eps=cfg.adv_eps)
        return {**rows, "old_logps": np.asarray(old), "ref_logps": np.asarray(ref),
                "advantages": np.asarray(adv), **self._reward_fields(rewards)}

    def ppo_batch(self, params, index: int) -> dict:
        cfg: PPOConfig = self.algo_config
        rows, rewards = self.sample_and_reward(
            params["policy"], "train", _np_rng(self.config.train.seed, 1, index),
            self.num_prompts, self._rollout_key(index), self.sampling, self.group)
        stats = _ppo_rollout_stats(self.model, cfg, params, rows,
                                   jnp.asarray(rewards.total, jnp.float32))
        return {**rows, **{k: np.asarray(v) for k, v in stats.items()},
                **self._reward_fields(rewards)}

    def pair_rows(self, split: str, rng: np.random.Generator, n: int) -> dict:
        """Chosen (the reference answer) vs rejected (a corrupted one) rows, `chosen_*` and
        `rejected_*` keys, sharing each prompt."""
        prompts, lengths, refs, audio = self.task.prompts(split, rng, n)
        width = self.width(prompts.shape[1])
        out = {}
        for name, texts in (("chosen", refs), ("rejected", self.task.corrupt(refs, rng))):
            answers, answer_lengths = self.task.answers(texts)
            rows = rollout.pack_rows(prompts, lengths, answers, answer_lengths, width,
                                     self.pad_id)
            rows.update(rollout.audio_rows(audio))
            out.update({f"{name}_{k}": v for k, v in rows.items()})
        return out

    def dpo_batch(self, params, index: int) -> dict:
        rows = self.pair_rows("train", _np_rng(self.config.train.seed, 2, index),
                              self.num_prompts)
        for name in ("chosen", "rejected"):
            rows[f"ref_{name}_logps"] = np.asarray(
                rollout.score(self.model, params["reference"], rows, f"{name}_"))
        return rows

    def sft_batch(self, index: int) -> dict:
        prompts, lengths, refs, audio = self.task.prompts(
            "train", _np_rng(self.config.train.seed, 3, index), self.num_prompts)
        answers, answer_lengths = self.task.answers(refs)
        rows = rollout.pack_rows(prompts, lengths, answers, answer_lengths,
                                 self.width(prompts.shape[1]), self.pad_id)
        return {**rows, **rollout.audio_rows(audio)}

    # ------------------------------------------------------------------ held-out evaluation

    def evaluate(self, params) -> dict[str, float]:
        params = jax.device_get(params)
        policy = params["policy"] if "policy" in params else params
        n, out = self.settings.eval_prompts, {}
        for label, settings in (("sampled", self.sampling), ("greedy", self.greedy)):
            _, rewards = self.sample_and_reward(
                policy, "eval", _np_rng(self.config.train.seed, 4), n,
                self._rollout_key(0, stream=4), settings, 1)
            out.update({f"heldout/{label}/{k}": v for k, v in rewards.metrics().items()})
        if "reference" in params:  # the DPO view: implicit rewards on held-out pairs
            rows = self.pair_rows("eval", _np_rng(self.config.train.seed, 5), n)
            logps = {f"{who}_{name}": completion_logps(
                rollout.score(self.model, p, rows, f"{name}_"), rows[f"{name}_mask"],
                average=False)
                for who, p in (("policy", policy), ("ref", params["reference"]))
                for name in ("chosen", "rejected")}
            cfg = self.algo_config if isinstance(self.algo_config, DPOConfig) else DPOConfig()
            _, metrics = preference_loss(logps["policy_chosen"], logps["policy_rejected"],
                                         logps["ref_chosen"], logps["ref_rejected"], cfg)
            out.update({f"heldout/pairs/{k}": float(v) for k, v in metrics.items()})
        return out


@functools.partial(jax.jit, static_argnames=("model", "cfg"))
def _ppo_rollout_stats(model, cfg: PPOConfig, params, rows, scores):
    """Old logps / values, reference logps, KL-shaped rewards, GAE advantages and returns."""
    out = rollout.forward(model, params["policy"], rows)
    old = sequence_logprobs(out["logits"], rows["targets"], rows["mask"])
    ref = rollout.token_logps(model, params["reference"], rows)
    old_values = value_head.values(params["value_head"], out["hidden"]) * rows["mask"]
    rewards, kl = kl_shaped_rewards(scores, old, ref, rows["mask"], cfg.kl_coef,
                                    cfg.kl_estimator)
    advantages, returns = ppo_advantages(rewards, old_values, rows["mask"], cfg)
    kl_row = jnp.sum(kl, -1) / jnp.maximum(jnp.sum(rows["mask"], -1), 1.0)
    return {"old_logps": old, "ref_logps": ref, "old_values": old_values,
            "advantages": advantages, "returns": returns, "kl_row": kl_row}


# ----------------------------------------------------------------------------- losses


def _reward_metrics(batch: dict) -> dict:
    return {k: jnp.mean(v) for k, v in batch.items() if k.startswith("reward/")}


def make_loss_fn(model: UnifiedAudioLM, settings: RLSettings, algo_config):
    algo = settings.algo

    def loss_fn(params, batch, rng):
        del rng  # the backbone has no dropout; sampling happened in the source
        if algo == "sft":
            out = rollout.forward(model, params, batch)
            loss, count = cross_entropy(out["logits"], batch["targets"], batch["mask"])
            return loss, {"accuracy": token_accuracy(out["logits"], batch["targets"],
                                                     batch["mask"]), "target_tokens": count}
        if algo == "dpo":
            logps = {n: rollout.token_logps(model, params["policy"], batch, f"{n}_")
                     for n in ("chosen", "rejected")}
            loss, metrics = dpo_loss(logps["chosen"], logps["rejected"],
                                     batch["ref_chosen_logps"], batch["ref_rejected_logps"],
                                     batch["chosen_mask"], batch["rejected_mask"], algo_config)
            kl = masked_mean(logps["chosen"] - batch["ref_chosen_logps"], batch["chosen_mask"])
            return loss, {**metrics, "kl": jax.lax.stop_gradient(kl)}
        if algo == "grpo":
            logps = rollout.token_logps(model, params["policy"], batch)
            loss, metrics = grpo_loss(logps, batch["old_logps"], batch["ref_logps"],
                                      batch["advantages"], batch["mask"], algo_config)
            return loss, {**metrics, **_reward_metrics(batch)}
        out = rollout.forward(model, params["policy"], batch)  # ppo
        logps = sequence_logprobs(out["logits"], batch["targets"], batch["mask"])
        vals = value_head.values(params["value_head"], out["hidden"]) * batch["mask"]
        loss, metrics = ppo_loss(logps, batch["old_logps"], batch["advantages"],
                                 batch["returns"], vals, batch["old_values"], batch["mask"],
                                 algo_config,
                                 out["logits"] if algo_config.entropy_coef > 0 else None)
        return loss, {**metrics, "kl": jnp.mean(batch["kl_row"]), **_reward_metrics(batch)}

    return loss_fn


# ----------------------------------------------------------------------------- experiment


def _backbone_init(model: UnifiedAudioLM, config: Config):
    b = example_batch(config, 1, 8)

    def init(rng):
        return model.init(rng, b["tokens"], b["positions"], b["segment_ids"],
                          b["audio_features"], b["audio_mask"])["params"]

    return init


def build_rl_experiment(config: Config, task: Task, name: str) -> Experiment:
    settings, _ = RLSettings.split(config.experiment)
    if jax.process_count() > 1 and settings.algo != "sft":
        raise ConfigError("chorus rl: rollouts are single-host for now; got "
                          f"{jax.process_count()} processes")
    builder = Builder(config, settings, task)
    model, backbone = builder.model, _backbone_init(builder.model, config)
    pretrained = None
    if settings.init_from:
        from chorus.rl.init_from import load_policy_params

        pretrained = load_policy_params(settings.init_from)

    def init_policy(rng):
        boxed = backbone(rng)
        return boxed if pretrained is None else with_values(boxed, pretrained)

    loss_fn = make_loss_fn(model, settings, builder.algo_config)
    tokens_per_batch = config.train.batch_size * builder.width(1)
    if settings.algo == "sft":
        def sft_iterator(shard_index, shard_count, seed):
            del shard_index, shard_count, seed  # the task's own stream (train.seed)
            source = OnPolicySource(lambda _, i: builder.sft_batch(i))
            source.receive({})  # supervised batches need no params
            return source

        return Experiment(name=name, init_fn=init_policy, loss_fn=loss_fn,
                          train_iterator=sft_iterator,
                          evaluate=lambda params, workdir: builder.evaluate(params),
                          tokens_per_batch=tokens_per_batch)

    def init_fn(rng):
        policy_key, value_key = jax.random.split(rng)
        policy = init_policy(policy_key)
        params = {"policy": policy, "reference": policy}
        if settings.algo == "ppo":
            params["value_head"] = value_head.init_value_head(value_key, config.model.d_model)
        return params

    make = {"grpo": builder.grpo_batch, "ppo": builder.ppo_batch,
            "dpo": builder.dpo_batch}[settings.algo]
    k = 1 if settings.algo == "dpo" else settings.updates_per_rollout
    source = OnPolicySource(make, k)
    return Experiment(name=name, init_fn=init_fn, loss_fn=loss_fn,
                      train_iterator=lambda shard_index, shard_count, seed: source,
                      evaluate=lambda params, workdir: builder.evaluate(params),
                      tokens_per_batch=tokens_per_batch, frozen=("reference",),
                      policy_sink=source.receive)
