"""ASR as a chorus.rl Task: utterances of the corpus as audio prompts, transcripts as answers.

    chorus rl --experiment asr --algo grpo --init-from runs/asr --workdir runs/asr_grpo

The policy is the backbone (the MTP and CTC heads are not trained by RL); the init run's
"mtp" and "ctc" heads ride along as frozen companions, so the RL run exports {"backbone",
"mtp", "ctc"} like an ASR run and its directory alone transcribes (`chorus transcribe`).
Settings: `experiments.asr.settings.AsrRLSettings` (the ASR keys, the RL keys and the prompt
pools, flat); the corpus, transcript form and head settings (`experiments.asr.RL_INHERITED`)
default to the `--init-from` run's, recorded in the RL run's config.json.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from chorus.config import Config, ConfigError, settings_from
from chorus.rl.experiment import build_rl_experiment
from chorus.rl.init_from import init_run_experiment
from chorus.rl.rollout import stack_ids
from chorus.rl.task import Completion, Prompts
from chorus.training.experiment import Experiment
from chorus.vocab import VocabLayout
from data_pipelines.tokenizer import tokenizer_assets
from experiments.asr.model import AsrModel
from experiments.asr.regime import eval_examples
from experiments.asr.settings import AsrRLSettings, AsrSettings, data_dir
from experiments.asr.transcriber import pad_requests, text_of

COMPANIONS = ("mtp", "ctc")  # the ASR run's heads kept beside the RL policy


class AsrTask:
    """The chorus.rl.task.Task: "train" draws from the first `rl_train_pool` examples of the
    train split, "eval" from the first `rl_eval_pool` of `eval_splits[0]` (held out). Rewards
    (`experiment.rewards`, e.g. {neg_wer: 1.0}) compare the decoded text with the reference
    after the one normalization. Opens no data until the first prompts are drawn."""

    name = "asr"

    def __init__(self, config: Config, settings: AsrRLSettings):
        self.config, self.settings = config, settings
        self.layout = VocabLayout.from_model_config(config.model)
        self.max_frames = config.train.max_mel_frames
        self.answer_width = config.decode.max_new_tokens  # <eos> included
        self.stop_tokens = (self.layout.eos_id,)
        self.assets = tokenizer_assets(settings.data_dir)
        self.asr = AsrModel.build(config, settings)

    @functools.cached_property
    def tokenizer(self):
        from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer

        return TextTokenizer.from_file(os.path.join(data_dir(self.settings),
                                                    TOKENIZER_FILENAME))

    @functools.cached_property
    def pools(self) -> dict[str, list[dict]]:
        c, s = self.config, self.settings
        return {"train": eval_examples(c, s, s.train_split, s.rl_train_pool),
                "eval": eval_examples(c, s, s.eval_splits[0], s.rl_eval_pool)}

    def prompts(self, split: str, rng: np.random.Generator, n: int) -> Prompts:
        pool = self.pools[split]
        chosen = [pool[int(i)] for i in rng.choice(len(pool), n, replace=len(pool) < n)]
        request = pad_requests(chosen, self.layout, self.max_frames)
        return Prompts(request["prompts"], request["lengths"],
                       tuple(ex["reference_text"] for ex in chosen),
                       {k: request[k] for k in ("audio_features", "audio_mask")})

    def answers(self, texts) -> tuple[np.ndarray, np.ndarray]:
        w = self.answer_width
        return stack_ids([[*self.tokenizer.encode(t).tolist()[:w - 1], self.layout.eos_id]
                          for t in texts], w, self.layout.pad_id)

    def corrupt(self, texts, rng: np.random.Generator) -> list[str]:
        """DPO's rejected transcripts: one word dropped (or one added to a one-word text)."""
        out = []
        for text in texts:
            words = text.split()
            if len(words) > 1:
                del words[int(rng.integers(len(words)))]
            else:
                words.append("the")
            out.append(" ".join(words))
        return out

    def decode(self, ids: np.ndarray) -> Completion:
        """Text: the text tokens before the first <eos>."""
        return Completion.from_ids(ids, text_of(ids, self.tokenizer, self.layout), self.layout)

    def companions(self, rng) -> dict:
        """The ASR heads this config builds (their shapes; values from the init run)."""
        params = self.asr.init_fn(self.config)(rng)
        return {k: params[k] for k in COMPANIONS if k in params}


def _check_ctc_frames(settings: AsrRLSettings) -> None:
    """The init run's CTC head reads the frames it was trained on (a head of the same shape
    would silently read the other rate)."""
    init = init_run_experiment(settings.init_from)
    if init is None:
        return
    trained = init.get("ctc_frames", AsrSettings.ctc_frames)
    if init.get("module") == "asr" and settings.ctc_frames != trained:
        raise ConfigError(f"experiment.ctc_frames: expected the init run's {trained!r} "
                          f"({settings.init_from}: its CTC head was trained on those frames), "
                          f"got {settings.ctc_frames!r}")


def build_rl(config: Config) -> Experiment:
    """`chorus rl --experiment asr --algo grpo|dpo|ppo`: RL of the backbone on ASR rewards."""
    settings = settings_from(AsrRLSettings, config.experiment)
    if settings.init_from:
        _check_ctc_frames(settings)
    return build_rl_experiment(config, AsrTask(config, settings), settings, name="asr_rl")

