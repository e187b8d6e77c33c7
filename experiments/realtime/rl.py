"""Realtime as a chorus.rl Task: the corpus' dialogue turns as audio prompts, text answers up
to <tts_start>, rewarded by the judge and the interaction rules.

    chorus rl --experiment realtime --algo grpo --init-from runs/realtime \
        --workdir runs/realtime_grpo \
        --set 'experiment.rewards={judge: {weight: 1, run: runs/judge}, persona_rules: 0.5,
               persona_fact: 0, persona_consistent: 0}'

The policy is the backbone; a rollout samples text ids and <tts_start> only (the session's
text grammar) and ends at <tts_start>. A reference is the exchange as JSON (card, question,
the corpus' answer): the judge and the persona checker read card + question, SFT / DPO's
chosen answer is the corpus' answer, DPO's rejected one the same answer with a wrong fact.
`chorus eval` of the RL run adds the persona table of the SFT run's evaluation
(experiment.py), so SFT and RL compare side by side. Settings: RealtimeRLSettings; the corpus
(`experiments.realtime.RL_INHERITED`) defaults to the `--init-from` run's.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np

from chorus.config import Config, settings_from
from chorus.rl.experiment import build_rl_experiment
from chorus.rl.rollout import stack_ids
from chorus.rl.task import Completion, Prompts
from chorus.training.experiment import Experiment
from chorus.vocab import VocabLayout
from data_pipelines.tokenizer import tokenizer_assets
from experiments.asr.experiment import corpus_tokenizer
from experiments.asr.transcriber import pad_requests
from experiments.judge import rewards as _judge_rewards  # noqa: F401  (registers "judge")
from experiments.realtime import rewards as _rewards  # noqa: F401  (registers persona_*)
from experiments.realtime.checker import parse_card, question_kind
from experiments.realtime.evaluate import WIDTH_BUCKET
from experiments.realtime.settings import RealtimeRLSettings
from experiments.realtime.turns import (
    ANSWER_END,
    answer_text,
    dialogue_examples,
    exchange_json,
    text_answer_mask,
)
from experiments.reward_model import rewards as _bt  # noqa: F401  (registers "reward_model")


class RealtimeTask:
    """The chorus.rl.task.Task: "train" draws from the first `rl_train_pool` dialogue turns of
    the train split (cards of the training names and places), "eval" from the first
    `rl_eval_pool` of `eval_splits[0]` with held-out cards. Opens no data until the first
    prompts are drawn."""

    name = "realtime"

    def __init__(self, config: Config, settings: RealtimeRLSettings):
        self.config, self.settings = config, settings
        self.layout = VocabLayout.from_model_config(config.model)
        self.max_frames = config.train.max_mel_frames
        self.answer_width = settings.max_answer_tokens + 1  # <tts_start> included
        self.stop_tokens = (self.layout.special(ANSWER_END),)
        self.allowed_ids = text_answer_mask(self.layout)
        self.assets = tokenizer_assets(settings.data_dir)

    @functools.cached_property
    def tokenizer(self):
        return corpus_tokenizer(self.config, self.settings)

    @functools.cached_property
    def pools(self) -> dict[str, list[dict]]:
        c, s = self.config, self.settings
        pools = {"train": dialogue_examples(c, s, s.train_split, s.rl_train_pool, "train"),
                 "eval": dialogue_examples(c, s, s.eval_splits[0], s.rl_eval_pool,
                                           "held_out")}
        longest = max(len(ex["prompt_tokens"]) for pool in pools.values() for ex in pool)
        self.width = -(-longest // WIDTH_BUCKET) * WIDTH_BUCKET  # one prompt shape
        return pools

    def prompts(self, split: str, rng: np.random.Generator, n: int) -> Prompts:
        pool = self.pools[split]
        chosen = [pool[int(i)] for i in rng.choice(len(pool), n, replace=len(pool) < n)]
        request = pad_requests(chosen, self.layout, self.max_frames, self.width)
        return Prompts(request["prompts"], request["lengths"],
                       tuple(exchange_json(ex) for ex in chosen),
                       {k: request[k] for k in ("audio_features", "audio_mask")})

    def answers(self, references) -> tuple[np.ndarray, np.ndarray]:
        w, end = self.answer_width, self.stop_tokens[0]
        return stack_ids([[*self.tokenizer.encode(json.loads(r)["answer"]).tolist()[:w - 1], end]
                          for r in references], w, self.layout.pad_id)

    def corrupt(self, references, rng: np.random.Generator) -> list[str]:
        """DPO's rejected answers: the reference answer with a wrong fact (the judge's
        `wrong_fact` perturbation of the same card and question)."""
        from experiments.judge.labels import perturb

        out = []
        for r in references:
            exchange = json.loads(r)
            persona = parse_card(exchange["persona"])
            kind = question_kind(exchange["question"])
            wrong = perturb(rng, persona, kind, exchange["question"], "wrong_fact")
            out.append(json.dumps({**exchange, "answer": wrong.answer}))
        return out

    def decode(self, ids: np.ndarray) -> Completion:
        return Completion.from_ids(ids, answer_text(ids, self.tokenizer, self.layout),
                                   self.layout)

    def companions(self, rng) -> dict:
        return {}


def build_rl(config: Config) -> Experiment:
    """`chorus rl --experiment realtime --algo grpo|dpo|ppo`; its evaluation adds the persona
    table (experiment.persona_eval) to the held-out rewards."""
    from chorus.model.unified import UnifiedAudioLM
    from experiments.realtime.experiment import persona_eval

    settings = settings_from(RealtimeRLSettings, config.experiment)
    experiment = build_rl_experiment(config, RealtimeTask(config, settings), settings,
                                     name="realtime_rl")
    model = UnifiedAudioLM(config)

    def evaluate(params, workdir: str) -> dict:
        result = experiment.evaluate(params, workdir)
        result.update(persona_eval(config, settings, model, params["policy"], workdir))
        return result

    return dataclasses.replace(experiment, evaluate=evaluate)
