"""The RL experiment's interfaces: typed settings, the algorithm registry (a new algorithm is one
registration), companions kept frozen and exported, `init_from` through `load_run`, and a
resume in the middle of an `updates_per_rollout` cycle re-sampling from the restored params.

This module is also an experiment module (`experiment.module=test_rl_experiment`): the symbol
task with a companion tree, so `load_run` can rebuild its runs.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chorus import sharding
from chorus.config import ConfigError, apply_overrides, load_config, settings_from
from chorus.rl.algorithms import (
    OnPolicyAlgorithm,
    available_algorithms,
    get_algorithm,
    register_algorithm,
)
from chorus.rl.engine import RolloutEngine
from chorus.rl.experiment import build_rl_experiment
from chorus.rl.init_from import preload, release
from chorus.training.restore import load_run, restore_params
from chorus.training.state import run_keys, unbox
from chorus.training.trainer import Trainer
from chorus.vocab import VocabLayout
from experiments import rl_tasks

TINY = ["model.num_layers=1", "audio.num_layers=1", "model.d_model=32", "model.mlp_dim=64",
        "model.num_heads=2", "model.num_kv_heads=1", "train.batch_size=8", "train.log_every=1",
        "train.checkpoint_every=1000", "optim.warmup_steps=1", "optim.learning_rate=3e-3",
        "experiment.task=copy", "experiment.eval_prompts=8", "experiment.group_size=4",
        "experiment.module=test_rl_experiment"]


class CompanionTask(rl_tasks.SymbolTask):
    """The symbol task plus a frozen companion tree (as ASR keeps its "mtp" and "ctc")."""

    def companions(self, rng):
        return {"judge": {"w": jax.random.normal(rng, (3, 4))}}


def _task(config):
    settings = settings_from(rl_tasks.SymbolRLSettings, config.experiment)
    return settings, CompanionTask(settings, VocabLayout.from_model_config(config.model))


def build(config):
    settings, task = _task(config)
    return build_rl_experiment(config, task, settings, name="companion")


def _config(*overrides):
    return load_config("cpu-tiny", [*TINY, *overrides])


def _records(workdir):
    with open(workdir / "metrics.jsonl") as f:
        return {r["step"]: r for r in map(json.loads, f) if "event" not in r}


# ----------------------------------------------------------------------------- settings


def test_settings_are_typed_and_nested_configs_merge_over_their_defaults():
    config = apply_overrides(_config(), ["experiment.grpo.kl_coef=0.01",
                                         "experiment.dpo={beta: 0.5}", "experiment.top_k=5"])
    s = settings_from(rl_tasks.SymbolRLSettings, config.experiment)
    assert s.grpo.kl_coef == 0.01 and s.grpo.clip_eps_high == 0.2  # the rest are defaults
    assert s.dpo.beta == 0.5 and s.dpo.loss_type == "sigmoid" and s.top_k == 5
    assert s.task == "copy" and s.group_size == 4 and dict(s.rewards) == {"exact_match": 1.0}
    bad = [({"grpo": {"clip": 0.2}}, r"experiment.grpo: unknown field\(s\) \['clip'\]"),
           ({"dpo": {"loss_type": "kto"}}, r"experiment.dpo.loss_type: expected one of"),
           ({"task": "sort"}, "experiment.task: expected one of"),
           ({"data_dir": "/x"}, r"unknown field\(s\) \['data_dir'\]"),
           ({"group_size": "4"}, "experiment.group_size: expected an int"),
           ({"rewards": {"no_such": 1.0}}, "rewards.no_such: expected a registered reward")]
    for values, message in bad:
        with pytest.raises(ConfigError, match=message):
            settings_from(rl_tasks.SymbolRLSettings, values)


def test_algorithms_are_looked_up_and_check_their_settings():
    assert {"sft", "dpo", "grpo", "ppo"} <= set(available_algorithms())
    for overrides, message in ((["experiment.algo=sac"], "experiment.algo: expected a "
                                "registered algorithm, one of .*'grpo'"),
                               (["experiment.algo=grpo", "experiment.group_size=1",
                                 "train.batch_size=2"], "experiment.group_size: expected an "
                                "int >= 2"),
                               (["experiment.algo=ppo", "experiment.temperature=0"],
                                "experiment.temperature: expected > 0 for ppo")):
        with pytest.raises(ConfigError, match=message):
            rl_tasks.build(_config(*overrides))


# ----------------------------------------------------------------------------- registry


@register_algorithm("test_reinforce")
class Reinforce(OnPolicyAlgorithm):
    """REINFORCE with a batch-mean baseline: one registration, no change elsewhere."""

    reference = False

    def score(self, engine, params, rows):
        return {}

    def advantages(self, batch, rewards):
        return {"advantages": (rewards - rewards.mean()).astype(np.float32)}

    def loss(self, model, params, batch):
        from chorus.rl import rollout

        logps = rollout.token_logps(model, params["policy"], batch).sum(-1)
        return -jnp.mean(batch["advantages"] * logps), {"logp": jnp.mean(logps)}


@pytest.mark.slow
def test_a_registered_algorithm_runs_through_the_rl_experiment():
    config = _config("experiment.algo=test_reinforce", "experiment.rewards={neg_cer: 1.0}")
    experiment = rl_tasks.build(config)
    params = unbox(jax.jit(experiment.init_fn)(run_keys(config)[0]))
    assert sorted(params) == ["policy"] and experiment.frozen == ()
    experiment.policy_sink(params)
    batch = next(experiment.train_iterator(0, 1, 0))
    assert batch["tokens"].shape[0] == 8 and batch["advantages"].shape == (8,)
    np.testing.assert_allclose(batch["advantages"], batch["reward/total"]
                               - batch["reward/total"].mean(), atol=1e-6)
    loss, metrics = jax.jit(experiment.loss_fn)(params, batch, jax.random.key(0))
    assert np.isfinite(float(loss)) and np.isfinite(float(metrics["logp"]))
    assert sorted(experiment.export_params(params)) == ["backbone"]


# ------------------------------------------------------- companions, init-from, resume


@pytest.fixture(scope="module")
def warmup(tmp_path_factory):
    """A 2-step SFT warm-up of the companion task: exports {"backbone", "judge"}."""
    workdir = tmp_path_factory.mktemp("warmup")
    config = _config("train.steps=2", "experiment.algo=sft")
    assert Trainer(config, build(config), str(workdir), console=False).run().step == 2
    return workdir


class _Recording:
    """A train iterator that keeps every batch it hands the trainer (in `batches`)."""

    def __init__(self, inner, batches):
        self.inner, self.batches = inner, batches

    def __next__(self):
        self.batches.append(next(self.inner))
        return self.batches[-1]

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def _grpo_config(warmup):
    return _config("train.steps=4", "experiment.algo=grpo", "experiment.updates_per_rollout=2",
                   f"experiment.init_from={warmup}", "experiment.rewards={neg_cer: 1.0}")


def _grpo(workdir, warmup, batches, stop_at_step=None):
    config = _grpo_config(warmup)
    base = build(config)
    experiment = dataclasses.replace(
        base, train_iterator=lambda i, n, s: _Recording(base.train_iterator(i, n, s), batches))
    return Trainer(config, experiment, str(workdir), console=False,
                   stop_at_step=stop_at_step).run()


@pytest.fixture(scope="module")
def straight(warmup, tmp_path_factory):
    """4 GRPO steps from the warm-up, uninterrupted: (workdir, the 4 batches trained on)."""
    workdir, batches = tmp_path_factory.mktemp("straight"), []
    _grpo(workdir, warmup, batches)
    return workdir, batches


@pytest.mark.slow
def test_companions_ride_along_frozen_and_are_exported(warmup, straight):
    straight, _ = straight
    sft = load_run(str(warmup))
    assert sorted(sft.params) == ["backbone", "judge"]
    rl = load_run(str(straight))
    assert sorted(rl.params) == ["backbone", "judge"]
    # the companion is the init run's, untouched by RL; the policy moved away from it
    np.testing.assert_array_equal(np.asarray(rl.params["judge"]["w"]),
                                  np.asarray(sft.params["judge"]["w"]))
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), rl.params["backbone"],
                         sft.params["backbone"])
    assert max(jax.tree.leaves(moved)) > 0
    assert rl.experiment.frozen == ("reference", "judge")
    # the RL run's directory alone: the init run gone, nothing preloaded
    release()
    os.rename(warmup, f"{warmup}.gone")
    try:
        alone = load_run(str(straight))
    finally:
        os.rename(f"{warmup}.gone", warmup)
    np.testing.assert_array_equal(np.asarray(alone.params["judge"]["w"]),
                                  np.asarray(rl.params["judge"]["w"]))


@pytest.mark.slow
def test_init_from_is_read_only_when_params_are_materialized(warmup):
    config = _config("experiment.algo=grpo", f"experiment.init_from={warmup}")
    experiment = build(config)
    release()
    key = run_keys(config)[0]
    shapes = jax.eval_shape(experiment.init_fn, key)  # state specs, resumes: nothing is read
    assert sorted(shapes) == ["judge", "policy", "reference"]
    with pytest.raises(Exception, match="is not loaded; call chorus.training.init_from.preload"):
        jax.jit(experiment.init_fn)(key)
    preload(str(warmup))
    params = unbox(jax.jit(experiment.init_fn)(key))
    sft = load_run(str(warmup)).params
    for a, b in zip(jax.tree.leaves(params["policy"]), jax.tree.leaves(sft["backbone"]),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _prompts(batch):
    """Each row's prompt ids: the tokens before its completion (the mask starts at p - 1)."""
    return [tuple(t[:int(np.argmax(m)) + 1]) for t, m in zip(batch["tokens"], batch["mask"],
                                                                strict=True)]


@pytest.mark.slow
def test_resume_mid_cycle_resamples_from_the_restored_params(warmup, straight, tmp_path):
    """updates_per_rollout=2: steps 3 and 4 share rollout 1. Uninterrupted, step 4 is its
    second update (the ratio to the rollout policy has moved off 1). Interrupted after step 3
    and resumed, step 4 re-samples rollout 1 (its prompts and key) from the restored params:
    the batch the algorithm builds for rollout number 1 from checkpoint 3, ratio = 1 again."""
    straight_dir, ref = straight
    workdir, first, second = tmp_path / "resumed", [], []
    assert _grpo(workdir, warmup, first, stop_at_step=3).status == "interrupted"
    assert _grpo(workdir, warmup, second).step == 4
    assert len(ref) == 4 and len(first) == 3 and len(second) == 1
    straight, resumed = _records(straight_dir), _records(workdir)
    for step in (1, 2, 3):
        assert resumed[step]["loss"] == pytest.approx(straight[step]["loss"], rel=1e-5)
    # uninterrupted: one rollout per cycle, reused for its second update
    assert straight[1]["fingerprint"] == straight[2]["fingerprint"]
    assert straight[3]["fingerprint"] == straight[4]["fingerprint"] != straight[1]["fingerprint"]
    # resumed: step 4 is rollout 1 again (the prompts of straight steps 3-4, not those of
    # rollout 0 or 2), re-sampled: a new batch
    (batch,) = second
    assert _prompts(batch) == _prompts(ref[3]) != _prompts(ref[0])
    assert resumed[4]["fingerprint"] != straight[4]["fingerprint"]
    # ... from the restored params: what the algorithm builds for rollout 1 from checkpoint 3
    config = _grpo_config(warmup)
    settings, task = _task(config)
    algorithm = get_algorithm("grpo")(settings)
    engine = RolloutEngine(config, settings, task, algorithm.group_size)
    _, params = restore_params(config, build(config), str(workdir),
                               sharding.make_mesh(config.mesh), step=3)
    expected = algorithm.batch(engine, params, 1)
    assert _prompts(expected) != _prompts(algorithm.batch(engine, params, 2))
    assert sorted(batch) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(batch[key], expected[key], err_msg=key)
    spread = lambda r: r["ratio/max"] - r["ratio/min"]
    assert spread(straight[3]) < 1e-4 and spread(straight[4]) > 1e-3
    assert spread(resumed[4]) < 1e-4
