"""The realtime RL reward components beside the judge (experiments/judge/rewards.py):

    persona_fact         1 if the answer states the card's fact for what was asked, else 0
    persona_consistent   1 if fact, style and character all hold (the rule oracle)
    persona_rules        the interaction rules, each 0/1, averaged: the answer has
                         1..max_words words, repeats no word bigram, and ends cleanly
                         (its last id is <tts_start>: it handed over to speech before the cap)
    judge_agreement      1 where the judge's verdict (reward > 0.5) and the checker's
                         (consistent) agree on an answer, else 0: {weight: 0, run: JUDGE} logs
                         their per-answer agreement, the measure of reward hacking (a policy
                         that learns what fools the judge drives it down while both rewards'
                         means may look fine)

The first two are the exact persona checker (checker.py): the metric a policy trained on the
judge is not trained on (`rewards={judge: ..., persona_fact: 0}` logs it at weight 0).
references[i]: the exchange as JSON, {"persona": card, "question": text} (turns.exchange_json),
the same references the judge reads. Importing this module registers the components.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.audio.text import normalize_text
from chorus.config import Config
from chorus.rl.rewards import batch_references, register_reward
from chorus.rl.task import Completion
from experiments.judge.rewards import JudgeReward, exchange_of
from experiments.realtime.checker import check_answer

REFERENCE = "JSON objects with 'persona' and 'question'"


def _checks(name: str, completions: Sequence[Completion], references):
    refs = batch_references(name, completions, references, REFERENCE)
    return [check_answer(*exchange_of(r, i), c.text)
            for i, (r, c) in enumerate(zip(refs, completions, strict=True))]


@register_reward("persona_fact")
def persona_fact(prompts, completions, *, references=None, **_) -> np.ndarray:
    return np.array([c.fact for c in _checks("persona_fact", completions, references)],
                    np.float64)


@register_reward("persona_consistent")
def persona_consistent(prompts, completions, *, references=None, **_) -> np.ndarray:
    return np.array([c.consistent for c in _checks("persona_consistent", completions,
                                                   references)], np.float64)


def rule_scores(text: str, ids: np.ndarray, end_id: int, max_words: int) -> tuple[float, ...]:
    """(length in range, no repeated bigram, ends with `end_id`) of one answer, each 0 or 1."""
    words = normalize_text(text).split()
    bigrams = list(zip(words, words[1:], strict=False))
    ids = np.asarray(ids).reshape(-1)
    return (float(1 <= len(words) <= max_words), float(len(set(bigrams)) == len(bigrams)),
            float(ids.size > 0 and int(ids[-1]) == end_id))


@register_reward("persona_rules")
class PersonaRules:
    def __init__(self, end_id: int, max_words: int):
        self.end_id, self.max_words = end_id, max_words

    @classmethod
    def build(cls, config: Config, *, max_words: int = 16) -> PersonaRules:
        from chorus.config import ConfigError
        from chorus.vocab import VocabLayout
        from experiments.realtime.turns import ANSWER_END

        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise ConfigError(f"rewards.persona_rules.max_words: expected an int >= 1, got "
                              f"{max_words!r}")
        return cls(VocabLayout.from_model_config(config.model).special(ANSWER_END), max_words)

    def __call__(self, prompts, completions: Sequence[Completion], **_) -> np.ndarray:
        return np.array([np.mean(rule_scores(c.text, c.ids, self.end_id, self.max_words))
                         for c in completions], np.float64)


@register_reward("judge_agreement")
class JudgeAgreement:
    def __init__(self, judge: JudgeReward):
        self.judge = judge

    @classmethod
    def build(cls, config: Config, *, run: str | None = None,
              samples: int | None = None) -> JudgeAgreement:
        """The judge run's verdicts (as the `judge` component builds them) against the
        checker's."""
        return cls(JudgeReward.build(config, run=run, samples=samples,
                                     component="judge_agreement"))

    def __call__(self, prompts, completions: Sequence[Completion], *, references=None,
                 **_) -> np.ndarray:
        judged = self.judge(prompts, completions, references=references) > 0.5
        consistent = [c.consistent for c in _checks("judge_agreement", completions, references)]
        return (judged == np.asarray(consistent, bool)).astype(np.float64)
