"""An RL (or SFT warm-up) `Experiment` over any verifiable `Task`, run by the one Trainer.

    algorithm  looked up by name (`experiment.algo`) in chorus.rl.algorithms' registry: its
               batch builder, advantage estimator and loss
    params     {"policy": backbone, ["reference": frozen copy], [algorithm extras: PPO's
               "value_head"], [the task's companions: frozen]}; `--init-from RUN` fills the
               policy (and reference) from RUN's exported "backbone" and the companions from
               its trees of the same names (chorus.training.init_from), read by
               `before_init` and dropped by `after_init`
    batches    an on-policy source: the Trainer hands it the current params (policy_sink)
               before each step; every `updates_per_rollout` steps the algorithm builds a new
               batch from them (rollouts sampled and scored on the params' own mesh,
               chorus.rl.rollout), reused in between
    export     {"backbone": policy, **companions}: what `load_run` of this run returns
    evaluate   held-out reward (sampled and greedy) and, with a reference, the implicit DPO
               reward margin and accuracy on held-out pairs (chorus.rl.engine)

Resuming restores the source's batch counter; a resume in the middle of an
`updates_per_rollout` cycle re-samples the cycle's rollout (same prompts and key) from the
restored params.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from chorus.config import Config, ConfigError
from chorus.model.factory import backbone_init
from chorus.rl.algorithms import get_algorithm
from chorus.rl.engine import RolloutEngine
from chorus.rl.settings import RLSettings
from chorus.rl.task import Task
from chorus.training.experiment import Experiment
from chorus.training.init_from import init_hooks, pretrained


class OnPolicySource:
    """A resumable train iterator whose batches are made from the params it last received.

    make_batch(params, rollout_number) is called every `updates_per_rollout` batches (and
    after set_state); the batch is reused in between. The params are the trainer's own arrays
    on its mesh: used for the next batch only (the trainer donates them to the step after)."""

    def __init__(self, make_batch: Callable[[Any, int], dict], updates_per_rollout: int = 1,
                 needs_params: bool = True):
        self._make, self._k, self._needs_params = make_batch, updates_per_rollout, needs_params
        self._params = None
        self._index = 0  # batches handed out
        self._cached: dict | None = None

    def receive(self, params) -> None:
        self._params = params

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        params, self._params = self._params, None
        if self._index % self._k == 0 or self._cached is None:
            if params is None and self._needs_params:
                raise RuntimeError("OnPolicySource: no params received; the trainer calls "
                                   "experiment.policy_sink(params) before each batch")
            self._cached = self._make(params, self._index // self._k)
        self._index += 1
        return self._cached

    def get_state(self) -> dict:
        return {"index": self._index}

    def set_state(self, state: dict) -> None:
        self._index, self._cached = int(state["index"]), None


def build_rl_experiment(config: Config, task: Task, settings: RLSettings,
                        name: str) -> Experiment:
    """The Experiment for `settings.algo` over `task`. Cheap: opens no data, loads no run."""
    algorithm = get_algorithm(settings.algo)(settings)
    if jax.process_count() > 1 and algorithm.needs_params:
        raise ConfigError(f"experiment.algo={settings.algo}: rollout batches are built on one "
                          f"host for now; got {jax.process_count()} processes")
    engine = RolloutEngine(config, settings, task, algorithm.group_size)
    model, backbone = engine.model, backbone_init(engine.model, config)
    companions = tuple(jax.eval_shape(task.companions, jax.random.key(0)))
    clash = sorted(set(companions) & {"policy", "reference", *jax.eval_shape(
        lambda r: algorithm.extra_params(r, config), jax.random.key(0))})
    if clash:
        raise ConfigError(f"task {task.name!r}: companion params {clash} clash with the RL "
                          "params' own keys")

    def init_fn(rng):
        # The policy takes the run's init key itself: a fresh policy is the backbone's init.
        extra_key, companion_key = jax.random.fold_in(rng, 1), jax.random.fold_in(rng, 2)
        trees = {"policy": backbone(rng), **task.companions(companion_key)}
        if settings.init_from:
            trees = pretrained(trees, settings.init_from,
                               {"policy": "backbone", **{k: k for k in companions}})
        return {**algorithm.init_params(trees.pop("policy"), extra_key, config), **trees}

    def loss_fn(params, batch, rng):
        del rng  # the backbone has no dropout; sampling happened in the source
        return algorithm.loss(model, params, batch)

    source = OnPolicySource(lambda params, index: algorithm.batch(engine, params, index),
                            algorithm.updates_per_rollout, algorithm.needs_params)
    return Experiment(
        name=name, init_fn=init_fn, loss_fn=loss_fn,
        train_iterator=lambda shard_index, shard_count, seed: source,
        evaluate=lambda params, workdir: engine.evaluate(params),
        frozen=(*algorithm.frozen, *companions),
        policy_sink=source.receive if algorithm.needs_params else None,
        # a fresh start reads the init run (never a resume, nor load_run of this run) and
        # drops its host copy once the params exist
        **(init_hooks(settings.init_from) if settings.init_from else {}),
        assets=dict(task.assets),
        export_params=lambda params: {"backbone": params["policy"],
                                      **{k: params[k] for k in companions}})
