"""What an algorithm gives the RL experiment, and the registry that finds it by name.

An `Algorithm` subclass, registered with `@register_algorithm("name")`, provides

    batch(engine, params, index) -> dict   its batch builder: host arrays for train step
                                           `index` (from the task, or from rollouts of the
                                           params the trainer handed over)
    loss(model, params, batch)   -> (scalar, metrics)   on the packed rows
    extra_params(rng, config)    -> {name: boxed tree}  trained beside the policy (PPO's
                                           value head); default none

and declares `reference` (keeps a frozen copy of the initial policy), `on_policy` (its
batches are sampled from the current policy: `experiment.group_size` samples per prompt,
reused for `experiment.updates_per_rollout` steps) and `needs_params` (its batches read the
params at all). `OnPolicyAlgorithm` is the builder for sampled batches: it samples, scores the
rollout with `score` (old-policy / reference logps, values) and adds `advantages` (its
advantage estimator). Params are always {"policy", ["reference"], *extra, *companions}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from chorus.config import ConfigError, check
from chorus.rl.engine import TRAIN_ROLLOUTS, RolloutEngine
from chorus.rl.settings import RLSettings

_REGISTRY: dict[str, type[Algorithm]] = {}


class Algorithm:
    name: ClassVar[str] = ""  # set by register_algorithm
    reference: ClassVar[bool] = True
    on_policy: ClassVar[bool] = False
    needs_params: ClassVar[bool] = True

    def __init__(self, settings: RLSettings):
        self.settings = settings

    @property
    def group_size(self) -> int:
        """Rows per prompt in a batch."""
        return self.settings.group_size if self.on_policy else 1

    @property
    def updates_per_rollout(self) -> int:
        return self.settings.updates_per_rollout if self.on_policy else 1

    @property
    def frozen(self) -> tuple[str, ...]:
        return ("reference",) if self.reference else ()

    def init_params(self, policy, rng, config) -> dict[str, Any]:
        params = {"policy": policy}
        if self.reference:
            params["reference"] = policy
        return {**params, **self.extra_params(rng, config)}

    def extra_params(self, rng, config) -> dict[str, Any]:
        return {}

    def batch(self, engine: RolloutEngine, params, index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def loss(self, model, params, batch: dict) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError


class OnPolicyAlgorithm(Algorithm):
    """Batches sampled from the current policy: G per prompt, scored, rewarded, advantages."""

    on_policy = True

    def __init__(self, settings: RLSettings):
        super().__init__(settings)
        check(settings.temperature > 0, "experiment.temperature",
              f"> 0 for {self.name} rollouts", settings.temperature)

    def batch(self, engine: RolloutEngine, params, index: int) -> dict[str, np.ndarray]:
        prompts = engine.task.prompts("train", engine.rng(TRAIN_ROLLOUTS, index),
                                      engine.num_prompts)
        sampled = engine.rollout(params["policy"], prompts, engine.key(0, index),
                                 engine.sampling, self.group_size)
        scored = self.score(engine, params, sampled.rows)
        advantages = self.advantages({**sampled.rows, **scored}, sampled.rewards.total)
        return {**sampled.rows, **scored, **advantages, **sampled.reward_fields()}

    def score(self, engine: RolloutEngine, params, rows: dict) -> dict[str, np.ndarray]:
        """What the loss needs of the rollout besides the rows: old-policy logps, ...."""
        raise NotImplementedError

    def advantages(self, batch: dict, rewards: np.ndarray) -> dict[str, np.ndarray]:
        """The advantage estimator: per-row total rewards [B] -> "advantages" (and what else
        the loss reads, e.g. PPO's returns)."""
        raise NotImplementedError


def reward_metrics(batch: dict) -> dict:
    """Batch means of a sampled batch's per-row reward/* fields (logged every step)."""
    return {k: jnp.mean(v) for k, v in batch.items() if k.startswith("reward/")}


def register_algorithm(name: str, *, replace: bool = False
                       ) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator: `@register_algorithm("grpo")`. A taken name is an error unless
    `replace=True`."""
    check(isinstance(name, str) and bool(name), "algorithm name", "a non-empty string", name)

    def decorate(cls: type[Algorithm]) -> type[Algorithm]:
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"algorithm {name!r}: expected an Algorithm subclass, got {cls!r}")
        if name in _REGISTRY and not replace and _REGISTRY[name] is not cls:
            raise ValueError(f"algorithm {name!r}: already registered to {_REGISTRY[name]!r}; "
                             "pass replace=True to override")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_algorithms() -> list[str]:
    return sorted(_REGISTRY)


def get_algorithm(name: str) -> type[Algorithm]:
    if name not in _REGISTRY:
        raise ConfigError(f"experiment.algo: expected a registered algorithm, one of "
                          f"{available_algorithms()}, got {name!r}")
    return _REGISTRY[name]
