"""`RLSettings`: the RL part of `config.experiment` (the `--set experiment.<key>=...` extras).

    algo                 sft | dpo | grpo | ppo   (`chorus rl --algo` sets it; sft = warm-up)
    rewards              reward mix, e.g. {exact_match: 1.0, neg_cer: 0.5}  (rewards.py)
    reward_normalization none | batch | group
    group_size           completions per prompt (GRPO's G; PPO samples this many too)
    updates_per_rollout  optimizer steps on each rollout batch (GRPO / PPO epochs)
    temperature, top_k, top_p, max_new_tokens       rollout sampling
    grpo, ppo, dpo       mappings of GRPOConfig / PPOConfig / DPOConfig fields
    eval_prompts         held-out prompts (or pairs) scored by `evaluate`
    init_from            a workdir whose latest checkpoint initializes policy and reference
Other keys belong to the task (`task_keys`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from chorus.config import ConfigError, DecodeConfig
from chorus.rl.dpo import DPOConfig
from chorus.rl.grpo import GRPOConfig
from chorus.rl.ppo import PPOConfig
from chorus.rl.rewards import RewardMixConfig

ALGOS = ("sft", "dpo", "grpo", "ppo")


def _sub(cls, name: str, values: Mapping[str, Any], **fixed):
    if not isinstance(values, Mapping):
        raise ConfigError(f"experiment.{name}: expected a mapping of {cls.__name__} fields, got "
                          f"{values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"experiment.{name}: expected fields of {cls.__name__} "
                          f"{sorted(known)}, got unknown {unknown}")
    return cls(**{**values, **fixed})


@dataclasses.dataclass(frozen=True)
class RLSettings:
    algo: str = "sft"
    rewards: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"exact_match": 1.0})
    reward_normalization: str = "none"
    group_size: int = 4
    updates_per_rollout: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 0  # 0 = the task's answer width
    grpo: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    ppo: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dpo: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    eval_prompts: int = 64
    init_from: str = ""

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ConfigError(f"experiment.algo: expected one of {ALGOS}, got {self.algo!r}")
        for name in ("group_size", "updates_per_rollout", "eval_prompts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"experiment.{name}: expected an int >= 1, got {value!r}")
        if self.max_new_tokens < 0:
            raise ConfigError(f"experiment.max_new_tokens: expected >= 0 (0 = task default), "
                              f"got {self.max_new_tokens}")
        if self.temperature <= 0 and self.algo in ("grpo", "ppo"):
            raise ConfigError(f"experiment.temperature: expected > 0 for {self.algo} rollouts, "
                              f"got {self.temperature}")
        self.reward_mix()  # validates names / weights now, not at the first rollout
        self.algo_config()

    @classmethod
    def split(cls, extras: Mapping[str, Any]) -> tuple[RLSettings, dict[str, Any]]:
        """(RL settings, the remaining task keys); `module` (the CLI's record) is dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        mine = {k: v for k, v in extras.items() if k in known}
        rest = {k: v for k, v in extras.items() if k not in known and k != "module"}
        return cls(**mine), rest

    def reward_mix(self) -> RewardMixConfig:
        return RewardMixConfig.from_mapping(
            self.rewards, normalization=self.reward_normalization,
            group_size=self.group_size if self.reward_normalization == "group" else None)

    def algo_config(self) -> GRPOConfig | PPOConfig | DPOConfig | None:
        if self.algo == "grpo":
            return _sub(GRPOConfig, "grpo", self.grpo, group_size=self.group_size)
        if self.algo == "ppo":
            return _sub(PPOConfig, "ppo", self.ppo)
        if self.algo == "dpo":
            return _sub(DPOConfig, "dpo", self.dpo)
        return None

    def decode(self, default_max_new: int, greedy: bool = False) -> DecodeConfig:
        return DecodeConfig(max_new_tokens=self.max_new_tokens or default_max_new,
                            temperature=0.0 if greedy else self.temperature, top_k=self.top_k,
                            top_p=self.top_p)
