"""The RL reward component "judge": a trained judge run scores each completion.

    rewards={"judge": {"weight": 1, "run": "runs/judge"}}           # pointwise
    rewards={"judge": {"weight": 1, "run": "runs/judge", "samples": 4}}  # K sampled rationales

reward = p(yes) / (p(yes) + p(no)) at the judge's <verdict> (experiments/judge/scoring.py), in
(0, 1). What the component needs from the RL task:

    completions[i].text   the answer as text (the task decodes its ids); the judge re-encodes
                          it with its own tokenizer, so the policy's vocabulary may differ
    references[i]         the exchange the answer belongs to: a JSON object string (or a
                          mapping) with "persona" (the card, `Persona.card()`) and "question"
                          (the user's question as text: the judge reads no audio)

The prompts themselves are not read (they may be audio). Importing this module registers the
component (an RL experiment that mixes it imports experiments.judge.rewards, as TTS's RL
imports experiments.tts.rewards).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from chorus.config import Config, ConfigError
from chorus.rl.rewards import batch_references, register_reward
from chorus.rl.task import Completion


def exchange_of(reference, index: int, component: str = "judge") -> tuple[str, str]:
    """(card, question) of one reference: a mapping or a JSON object string (errors name the
    reward `component` reading it)."""
    if isinstance(reference, str):
        try:
            reference = json.loads(reference)
        except json.JSONDecodeError:
            reference = None
    if not (isinstance(reference, Mapping) and isinstance(reference.get("persona"), str)
            and isinstance(reference.get("question"), str)):
        raise ValueError(f"reward {component!r}: expected references[{index}] to be a JSON "
                         f"object with 'persona' and 'question' texts, got {reference!r}")
    return reference["persona"], reference["question"]


@register_reward("judge")
class JudgeReward:
    def __init__(self, scorer, samples: int | None = None):
        self.scorer, self.samples = scorer, samples

    @classmethod
    def build(cls, config: Config, *, run: str | None = None, samples: int | None = None,
              component: str = "judge") -> JudgeReward:
        """The judge trained in `run` (`chorus train --experiment judge`): its backbone, its
        settings (rationale or not) and its tokenizer asset. samples: K rationales (default:
        the run's experiment.reward_samples); errors name rewards.<component>.*."""
        from chorus.model.unified import UnifiedAudioLM
        from chorus.training.init_from import load_exported
        from chorus.vocab import VocabLayout
        from experiments.judge.experiment import load_tokenizer
        from experiments.judge.scoring import JudgeScorer
        from experiments.judge.settings import judge_settings

        field = f"rewards.{component}.run"
        if not isinstance(run, str) or not run:
            raise ConfigError(f"{field}: expected the run directory of a judge run, got {run!r}")
        if samples is not None and (not isinstance(samples, int) or samples < 0):
            raise ConfigError(f"rewards.{component}.samples: expected an int >= 0, got "
                              f"{samples!r}")
        loaded = load_exported(run, field)
        if loaded.experiment.name != "judge":
            raise ConfigError(f"{field}: expected a judge run, got a {loaded.experiment.name!r} "
                              f"run in {run}")
        settings = judge_settings(loaded.config)
        model = UnifiedAudioLM(Config(model=loaded.config.model, audio=loaded.config.audio))
        layout = VocabLayout.from_model_config(loaded.config.model)
        tokenizer = load_tokenizer(settings, layout, loaded.workdir)
        return cls(JudgeScorer(model, loaded.params["backbone"], tokenizer, settings), samples)

    def __call__(self, prompts, completions: Sequence[Completion], *, references=None,
                 **_) -> np.ndarray:
        refs = batch_references("judge", completions, references,
                                "JSON objects with 'persona' and 'question'")
        cards, questions = zip(*(exchange_of(r, i) for i, r in enumerate(refs)), strict=True) \
            if refs else ((), ())
        judged = self.scorer.pointwise(list(cards), list(questions),
                                       [c.text for c in completions], samples=self.samples)
        return np.asarray(judged.reward, np.float64)
