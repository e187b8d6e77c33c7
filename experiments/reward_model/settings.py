"""RewardModelSettings: the `--set experiment.<field>=...` keys of `chorus train --experiment
reward_model`."""

from __future__ import annotations

import dataclasses

from chorus.config import Config, check, settings_from
from experiments.judge.labels import PERTURBATIONS


@dataclasses.dataclass(frozen=True)
class RewardModelSettings:
    """The judge's data, without rationales: only the tokenizer comes from `data_dir` (a corpus
    made by `chorus data synth`, or any directory holding a tokenizer.model)."""

    data_dir: str = ""
    # Perturbation types never trained on, and every k-th name and place held out of the
    # training cards: the judge's defaults, so both arms are judged on the same footing.
    held_out_perturbations: tuple[str, ...] = ("refusal",)
    held_out_every: int = 4
    eval_examples: int = 64  # pairs per perturbation type, per persona split
    eval_batch: int = 32  # exchanges per scoring call

    def __post_init__(self):
        check(isinstance(self.held_out_perturbations, tuple)
              and all(p in PERTURBATIONS for p in self.held_out_perturbations),
              "experiment.held_out_perturbations", f"a list of types from {list(PERTURBATIONS)}",
              self.held_out_perturbations)
        check(len(self.trained_perturbations) > 0, "experiment.held_out_perturbations",
              "at least one perturbation type left to train on", self.held_out_perturbations)
        check(isinstance(self.held_out_every, int) and self.held_out_every >= 2,
              "experiment.held_out_every", "an int >= 2", self.held_out_every)
        for name in ("eval_examples", "eval_batch"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"experiment.{name}", "an int >= 1",
                  value)

    @property
    def trained_perturbations(self) -> tuple[str, ...]:
        return tuple(p for p in PERTURBATIONS if p not in self.held_out_perturbations)


def reward_model_settings(config: Config) -> RewardModelSettings:
    return settings_from(RewardModelSettings, config.experiment)
