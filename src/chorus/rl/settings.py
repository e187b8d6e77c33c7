"""`RLSettings`: the RL keys of `config.experiment` (`--set experiment.<key>=...`).

    algo                 a registered algorithm (chorus.rl.algorithms: sft | dpo | grpo | ppo;
                         `chorus rl --algo` sets it; sft = the supervised warm-up)
    rewards              reward mix, e.g. {exact_match: 1.0, neg_cer: 0.5}  (rewards.py)
    reward_normalization none | batch | group
    group_size           completions per prompt (GRPO's G; PPO samples this many too)
    updates_per_rollout  optimizer steps on each rollout batch (GRPO / PPO epochs)
    temperature, top_k, top_p, max_new_tokens       rollout sampling
    grpo, ppo, dpo       the algorithms' typed configs (GRPOConfig / PPOConfig / DPOConfig):
                         `--set experiment.grpo.kl_coef=0.01` or `experiment.grpo={kl_coef: 0.01}`
                         (a partial mapping keeps the other defaults)
    eval_prompts         held-out prompts (or pairs) scored by `evaluate`
    init_from            a run directory whose exported "backbone" initializes policy and
                         reference (and whose trees of the task's companion names its companions)

A task's settings compose with these flat (`class SymbolRLSettings(RLSettings,
SymbolTaskSettings)`), read by `chorus.config.settings_from`, so every key stays
`experiment.<key>`.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal

from chorus.config import DecodeConfig, check
from chorus.rl import model_rewards  # noqa: F401  (registers the model-holding rewards)
from chorus.rl.dpo import DPOConfig
from chorus.rl.grpo import GRPOConfig
from chorus.rl.ppo import PPOConfig
from chorus.rl.rewards import RewardMixConfig


@dataclasses.dataclass(frozen=True)
class RLSettings:
    algo: str = "sft"
    rewards: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"exact_match": 1.0})
    reward_normalization: Literal["none", "batch", "group"] = "none"
    group_size: int = 4
    updates_per_rollout: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 0  # 0 = the task's answer width
    grpo: GRPOConfig = GRPOConfig()
    ppo: PPOConfig = PPOConfig()
    dpo: DPOConfig = DPOConfig()
    eval_prompts: int = 64
    init_from: str = ""

    def __post_init__(self):
        check(isinstance(self.algo, str) and bool(self.algo), "experiment.algo",
              "an algorithm name", self.algo)
        for name in ("group_size", "updates_per_rollout", "eval_prompts"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"experiment.{name}", "an int >= 1",
                  value)
        check(self.max_new_tokens >= 0, "experiment.max_new_tokens",
              ">= 0 (0 = the task's answer width)", self.max_new_tokens)
        check(self.temperature >= 0, "experiment.temperature", "a number >= 0",
              self.temperature)
        object.__setattr__(self, "rewards", types.MappingProxyType(dict(self.rewards)))
        self.reward_mix()  # reward names and weights are checked now, not at the first rollout

    def reward_mix(self) -> RewardMixConfig:
        return RewardMixConfig.from_mapping(
            self.rewards, normalization=self.reward_normalization,
            group_size=self.group_size if self.reward_normalization == "group" else None)

    def decode(self, default_max_new: int, greedy: bool = False) -> DecodeConfig:
        return DecodeConfig(max_new_tokens=self.max_new_tokens or default_max_new,
                            temperature=0.0 if greedy else self.temperature, top_k=self.top_k,
                            top_p=self.top_p)
