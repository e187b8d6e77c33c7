"""The RL reward component "reward_model": a trained Bradley-Terry reward model scores each
completion, sigmoid(r) in (0, 1).

    rewards={"reward_model": {"weight": 1, "run": "runs/reward_model"}}

It reads what the judge's component reads (experiments/judge/rewards.py): completions[i].text
and references[i], the exchange as JSON with "persona" and "question". Importing this module
registers the component.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.config import Config, ConfigError
from chorus.rl.rewards import batch_references, register_reward
from chorus.rl.task import Completion
from experiments.judge.rewards import exchange_of


@register_reward("reward_model")
class RewardModelReward:
    def __init__(self, scorer):
        self.scorer = scorer

    @classmethod
    def build(cls, config: Config, *, run: str | None = None) -> RewardModelReward:
        """The reward model trained in `run` (`chorus train --experiment reward_model`)."""
        from chorus.model.unified import UnifiedAudioLM
        from chorus.training.init_from import load_exported
        from chorus.vocab import VocabLayout
        from experiments.judge.experiment import load_tokenizer
        from experiments.reward_model.scoring import RewardModelScorer
        from experiments.reward_model.settings import reward_model_settings

        field = "rewards.reward_model.run"
        if not isinstance(run, str) or not run:
            raise ConfigError(f"{field}: expected the run directory of a reward_model run, "
                              f"got {run!r}")
        loaded = load_exported(run, field)
        if loaded.experiment.name != "reward_model":
            raise ConfigError(f"{field}: expected a reward_model run, got a "
                              f"{loaded.experiment.name!r} run in {run}")
        settings = reward_model_settings(loaded.config)
        model = UnifiedAudioLM(Config(model=loaded.config.model, audio=loaded.config.audio))
        layout = VocabLayout.from_model_config(loaded.config.model)
        tokenizer = load_tokenizer(settings, layout, loaded.workdir)
        return cls(RewardModelScorer(model, loaded.params, tokenizer, settings))

    def __call__(self, prompts, completions: Sequence[Completion], *, references=None,
                 **_) -> np.ndarray:
        refs = batch_references("reward_model", completions, references,
                                "JSON objects with 'persona' and 'question'")
        pairs = [exchange_of(r, i, "reward_model") for i, r in enumerate(refs)]
        cards, questions = [c for c, _ in pairs], [q for _, q in pairs]
        return self.scorer.reward(cards, questions, [c.text for c in completions])
