"""Synthetic verifiable tasks for RL on the shared backbone (text-only prompts).

    prompt   <bos> <task tag> s_1 .. s_n <assistant>       s_i: one of 10 symbols "a".."j"
    answer   the task's transform of s, then <eos>
    tasks    copy (s) | reverse (s reversed) | shift (each symbol +1 mod 10, i.e. "increment")
    reward   any mix of chorus.rl.rewards on the decoded answer vs the reference
             (exact_match, neg_cer, ...); a non-symbol token decodes as "z"
    pairs    chosen = the reference answer, rejected = it with one symbol changed (DPO)
    split    held-out ("eval") strings are those whose symbol-index sum is 0 mod 5; "train"
             never draws them

The 10 symbols are fixed text ids of the unified vocabulary (no tokenizer needed); letters,
not digits, because the reward normalization spells digits out as words.

    chorus rl --experiment rl_tasks --algo grpo --workdir W --sft-steps 150 \
        --set 'experiment.rewards={exact_match: 1.0}'
    chorus train --experiment rl_tasks --workdir W_SFT     # the supervised warm-up alone

Settings (`--set experiment.<key>=...`): task, min_len, max_len (SymbolTaskSettings) and the
RL keys of chorus.rl.settings, one flat `SymbolRLSettings`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import numpy as np

from chorus.config import Config, ConfigError, check, settings_from
from chorus.rl.experiment import build_rl_experiment
from chorus.rl.rollout import stack_ids
from chorus.rl.settings import RLSettings
from chorus.rl.task import Completion, Prompts
from chorus.training.experiment import Experiment
from chorus.vocab import VocabLayout

SYMBOLS = "abcdefghij"
SYMBOL_BASE = 16  # text ids 16..25 are the symbols
TaskName = Literal["copy", "reverse", "shift"]
TASK_TAGS = dict(zip(typing.get_args(TaskName), (40, 41, 42), strict=True))  # tag text ids
UNKNOWN = "z"


@dataclasses.dataclass(frozen=True)
class SymbolTaskSettings:
    task: TaskName = "reverse"
    min_len: int = 3
    max_len: int = 4

    def __post_init__(self):
        check(self.task in TASK_TAGS, "experiment.task", f"one of {sorted(TASK_TAGS)}",
              self.task)
        check(1 <= self.min_len <= self.max_len, "experiment.min_len/max_len",
              "1 <= min_len <= max_len", (self.min_len, self.max_len))


@dataclasses.dataclass(frozen=True)
class SymbolRLSettings(RLSettings, SymbolTaskSettings):
    def __post_init__(self):
        SymbolTaskSettings.__post_init__(self)
        RLSettings.__post_init__(self)


class SymbolTask:
    """The chorus.rl.task.Task for one transform over symbol strings."""

    def __init__(self, settings: SymbolTaskSettings, layout: VocabLayout):
        if layout.text_size <= max(TASK_TAGS.values()):
            raise ConfigError(f"model.text_vocab_size: expected > {max(TASK_TAGS.values())} "
                              f"for the symbol task, got {layout.text_size}")
        self.settings, self.layout = settings, layout
        self.name = settings.task
        self.answer_width = settings.max_len + 1  # + <eos>
        self.prompt_width = settings.max_len + 3  # <bos> tag ... <assistant>
        self.stop_tokens = (layout.eos_id,)
        self.assets: dict[str, str] = {}  # no tokenizer: the symbols are fixed ids

    def transform(self, s: str) -> str:
        if self.name == "copy":
            return s
        if self.name == "reverse":
            return s[::-1]
        return "".join(SYMBOLS[(SYMBOLS.index(c) + 1) % 10] for c in s)

    @staticmethod
    def held_out(s: str) -> bool:
        return sum(SYMBOLS.index(c) for c in s) % 5 == 0

    def _draw(self, split: str, rng: np.random.Generator) -> str:
        while True:
            n = int(rng.integers(self.settings.min_len, self.settings.max_len + 1))
            s = "".join(SYMBOLS[i] for i in rng.integers(0, 10, n))
            if self.held_out(s) == (split == "eval"):
                return s

    def encode(self, s: str) -> list[int]:
        return [SYMBOL_BASE + SYMBOLS.index(c) for c in s]

    def prompts(self, split: str, rng: np.random.Generator, n: int) -> Prompts:
        out = np.full((n, self.prompt_width), self.layout.pad_id, np.int32)
        lengths = np.zeros((n,), np.int32)
        refs = []
        for i in range(n):
            s = self._draw(split, rng)
            ids = [self.layout.special("<bos>"), TASK_TAGS[self.name], *self.encode(s),
                   self.layout.special("<assistant>")]
            out[i, :len(ids)], lengths[i] = ids, len(ids)
            refs.append(self.transform(s))
        return Prompts(out, lengths, tuple(refs))  # text-only prompts

    def answers(self, texts) -> tuple[np.ndarray, np.ndarray]:
        return stack_ids([[*self.encode(t), self.layout.eos_id][:self.answer_width]
                          for t in texts], self.answer_width, self.layout.pad_id)

    def corrupt(self, texts, rng: np.random.Generator) -> list[str]:
        out = []
        for t in texts:
            i = int(rng.integers(len(t)))
            wrong = SYMBOLS[(SYMBOLS.index(t[i]) + int(rng.integers(1, 10))) % 10]
            out.append(t[:i] + wrong + t[i + 1:])
        return out

    def decode(self, ids: np.ndarray) -> Completion:
        """Text: the symbols up to the first <eos>; other tokens read as "z"."""
        chars = []
        for tok in np.asarray(ids):
            tok = int(tok)
            if tok == self.layout.eos_id:
                break
            idx = tok - SYMBOL_BASE
            chars.append(SYMBOLS[idx] if 0 <= idx < 10 else UNKNOWN)
        return Completion.from_ids(ids, "".join(chars), self.layout)

    def companions(self, rng) -> dict:
        return {}


def build(config: Config) -> Experiment:
    settings = settings_from(SymbolRLSettings, config.experiment)
    task = SymbolTask(settings, VocabLayout.from_model_config(config.model))
    return build_rl_experiment(config, task, settings, name=f"rl_tasks/{settings.task}")
