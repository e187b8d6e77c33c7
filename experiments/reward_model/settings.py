"""RewardModelSettings: the `--set experiment.<field>=...` keys of `chorus train --experiment
reward_model`."""

from __future__ import annotations

import dataclasses

from chorus.config import Config, settings_from
from experiments.judge.settings import PersonaLabelSettings


@dataclasses.dataclass(frozen=True)
class RewardModelSettings(PersonaLabelSettings):
    """The judge's labels, held-out types and held-out names and places (its defaults, so the
    two arms are judged on the same footing), without rationales; eval_examples counts pairs
    per perturbation type and persona split."""


def reward_model_settings(config: Config) -> RewardModelSettings:
    return settings_from(RewardModelSettings, config.experiment)
