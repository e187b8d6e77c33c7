"""The reward model's scalar: its head on the backbone's hidden state at the exchange's last token.

    scorer = RewardModelScorer(model, params, tokenizer, settings)
    r = scorer.rewards(cards, questions, answers)    # [n] raw Bradley-Terry scores
    p = scorer.reward(cards, questions, answers)     # [n] sigmoid(r) in (0, 1): the RL reward

The exchange is the judge's pointwise prompt (experiments/judge/prompt.py) up to and including
`<rationale>`: where the generative judge starts to write, the reward model reads its score.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from chorus.model.unified import UnifiedAudioLM
from chorus.rl import rollout, value_head
from chorus.vocab import VocabLayout
from data_pipelines.tokenizer import TextTokenizer
from experiments.judge.prompt import judge_prompt
from experiments.judge.scoring import padded_rows, round_up
from experiments.reward_model.settings import RewardModelSettings


def exchange_rewards(model: UnifiedAudioLM, params, rows: dict) -> jax.Array:
    """[R] fp32 scores: the head ("reward_head") on the hidden state at each row's `last`."""
    out = model.apply({"params": params["backbone"]}, rows["tokens"], rows["positions"],
                      rows["segment_ids"])
    last = jnp.take_along_axis(out["hidden"], rows["last"][:, None, None], axis=1)[:, 0]
    return value_head.values(params["reward_head"], last)


_scores = jax.jit(exchange_rewards, static_argnames=("model",))


class RewardModelScorer:
    """Batched scoring with one run's params {"backbone", "reward_head"} (unboxed)."""

    def __init__(self, model: UnifiedAudioLM, params, tokenizer: TextTokenizer,
                 settings: RewardModelSettings):
        self.model, self.params, self.tokenizer, self.settings = model, params, tokenizer, settings
        self.layout = VocabLayout.from_model_config(model.config.model)

    def rewards(self, cards: Sequence[str], questions: Sequence[str],
                answers: Sequence[str]) -> np.ndarray:
        n = len(cards)
        if not len(questions) == len(answers) == n:
            raise ValueError(f"reward model inputs: expected one entry per exchange in every "
                             f"column, got {n} cards, {len(questions)} questions and "
                             f"{len(answers)} answers")
        prompts = [judge_prompt(self.layout, self.tokenizer.encode, cards[i], questions[i],
                                answers[i]) for i in range(n)]
        size, out = self.settings.eval_batch, []
        for start in range(0, n, size):
            chunk = prompts[start: start + size]
            padded = chunk + [chunk[-1]] * (size - len(chunk))  # one compiled batch size
            rows = padded_rows(padded, round_up(max(map(len, padded))), self.layout.pad_id)
            scores = rollout.on_params_mesh(_scores, self.model, self.params, rows)
            out.append(np.asarray(scores, np.float64)[:len(chunk)])
        return np.concatenate(out) if out else np.zeros(0)

    def reward(self, cards: Sequence[str], questions: Sequence[str],
               answers: Sequence[str]) -> np.ndarray:
        return sigmoid(self.rewards(cards, questions, answers))


def sigmoid(r: np.ndarray) -> np.ndarray:
    """A score as the RL reward, in (0, 1)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(r)))
