"""Reward components that hold models, built once from the run config (rewards.py's protocol).

    backbone_logprob   per-token log-prob of each completion, given its prompt (audio
                       included), under a frozen backbone from another run: a likelihood prior
                       (e.g. a supervised model keeping RL answers in its distribution) or an
                       LM judge of fluency. Mix: {"backbone_logprob": {"weight": 0.1,
                       "run": "runs/sft"}}; `average: false` sums over tokens instead.

The scoring runs where the loaded params live (`load_run` places them on that run's mesh).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.config import Config, ConfigError
from chorus.model.unified import UnifiedAudioLM
from chorus.rl import rollout
from chorus.rl.logprobs import completion_logps
from chorus.rl.rewards import register_reward
from chorus.rl.task import Completion, Prompts
from chorus.vocab import VocabLayout

WIDTH_MULTIPLE = 16  # rows are padded to this, so scoring compiles for few widths


@register_reward("backbone_logprob")
class BackboneLogprob:
    def __init__(self, model: UnifiedAudioLM, params, average: bool = True):
        self.model, self.params, self.average = model, params, average
        self.pad_id = VocabLayout.from_model_config(model.config.model).pad_id

    @classmethod
    def build(cls, config: Config, *, run: str | None = None,
              average: bool = True) -> BackboneLogprob:
        """The backbone exported by `run` (chorus.training.restore.load_run); its vocabulary
        must be this run's."""
        from chorus.training.init_from import load_exported

        field = "rewards.backbone_logprob.run"
        if not isinstance(run, str) or not run:
            raise ConfigError(f"{field}: expected the run directory of the scoring backbone, "
                              f"got {run!r}")
        loaded = load_exported(run, field)
        exported = loaded.params
        ours, theirs = (VocabLayout.from_model_config(c.model) for c in (config, loaded.config))
        if ours != theirs:
            raise ConfigError(f"{field}: {run} has the vocabulary "
                              f"{theirs}, expected this run's {ours}")
        model = UnifiedAudioLM(Config(model=loaded.config.model, audio=loaded.config.audio))
        return cls(model, exported["backbone"], average)

    def __call__(self, prompts: Prompts, completions: Sequence[Completion], **_) -> np.ndarray:
        longest = max((len(c.ids) for c in completions), default=0)
        answer_width = max(1, -(-longest // WIDTH_MULTIPLE) * WIDTH_MULTIPLE)
        ids, lengths = rollout.stack_ids([c.ids for c in completions], answer_width,
                                         self.pad_id)
        rows = rollout.pack_rows(prompts.ids, prompts.lengths, ids, lengths,
                                 prompts.ids.shape[1] + answer_width, self.pad_id)
        rows.update(rollout.audio_rows(prompts.audio))
        logps = rollout.score(self.model, self.params, rows)
        return np.asarray(completion_logps(logps, rows["mask"], average=self.average),
                          np.float64)
