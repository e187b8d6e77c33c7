"""JudgeSettings: the `--set experiment.<field>=...` keys of `chorus train --experiment judge`."""

from __future__ import annotations

import dataclasses

from chorus.config import Config, check, settings_from
from data_pipelines.lexicon import Lexicon
from data_pipelines.personas import split_lexicon
from experiments.judge.labels import PERTURBATIONS


@dataclasses.dataclass(frozen=True)
class PersonaLabelSettings:
    """What every model trained on the persona labels (experiments/judge/labels.py) shares:
    the generative judge and the Bradley-Terry reward model. The data are generated (persona
    cards, no audio): only the tokenizer comes from `data_dir`, a corpus made by `chorus data
    synth` (its tokenizer covers the persona words) or any directory holding a tokenizer.model."""

    data_dir: str = ""
    # Perturbation types never trained on (evaluation reports them apart).
    held_out_perturbations: tuple[str, ...] = ("refusal",)
    # Every k-th name and place (indices 0, k, 2k, ..) is held out of training cards;
    # evaluation cards use only those.
    held_out_every: int = 4
    eval_examples: int = 64  # per answer or perturbation type, per table
    eval_batch: int = 32  # rows per scoring call in `chorus eval`

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

    def split(self, train: bool) -> tuple[Lexicon, tuple[str, ...]]:
        """(lexicon, perturbation types) of the training rows, or of the evaluation rows:
        held-out names and places, every type."""
        train_lexicon, held_out = split_lexicon(every=self.held_out_every)
        if train:
            return train_lexicon, self.trained_perturbations
        return held_out, PERTURBATIONS


@dataclasses.dataclass(frozen=True)
class JudgeSettings(PersonaLabelSettings):
    """What the judge is trained on and how it scores."""

    # false: the rationale section is empty (`<rationale> <verdict> ...`): the no-thinking judge
    rationale: bool = True
    positive_fraction: float = 0.5  # consistent answers among the pointwise examples
    pairwise_fraction: float = 0.25  # training rows that are pairwise (<choice_a>/<choice_b>)
    # The reward: K sampled rationales averaged (0 = one greedy rationale), their temperature
    # and length budget (a rationale that does not reach <verdict> by then gets it appended).
    reward_samples: int = 0
    sample_temperature: float = 1.0
    max_rationale_tokens: int = 48

    def __post_init__(self):
        super().__post_init__()
        check(0 < self.positive_fraction < 1, "experiment.positive_fraction",
              "a fraction in (0, 1)", self.positive_fraction)
        check(0 <= self.pairwise_fraction < 1, "experiment.pairwise_fraction",
              "a fraction in [0, 1)", self.pairwise_fraction)
        check(isinstance(self.reward_samples, int) and self.reward_samples >= 0,
              "experiment.reward_samples", "an int >= 0 (0 = greedy rationale)",
              self.reward_samples)
        check(self.sample_temperature > 0, "experiment.sample_temperature",
              "a number > 0", self.sample_temperature)
        check(isinstance(self.max_rationale_tokens, int) and self.max_rationale_tokens >= 1,
              "experiment.max_rationale_tokens", "an int >= 1", self.max_rationale_tokens)


def judge_settings(config: Config) -> JudgeSettings:
    return settings_from(JudgeSettings, config.experiment)


def tokenizer_path(settings: PersonaLabelSettings) -> str:
    """<data_dir>/tokenizer.model, or an error naming the setting and how to make one."""
    import os

    from data_pipelines.tokenizer import TOKENIZER_FILENAME

    path = os.path.join(os.path.expanduser(settings.data_dir), TOKENIZER_FILENAME)
    check(bool(settings.data_dir) and os.path.isfile(path), "experiment.data_dir",
          "a directory with a tokenizer.model (--data DIR, e.g. made by `chorus data synth "
          "--out DIR`)", settings.data_dir)
    return path
