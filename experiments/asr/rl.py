"""ASR as a chorus.rl Task: utterances of the corpus as audio prompts, transcripts as answers.

    chorus rl --experiment asr --algo grpo --init-from runs/asr --workdir runs/asr_grpo
"""

from __future__ import annotations

import os

import numpy as np

from chorus.config import Config, ConfigError
from chorus.training.experiment import Experiment
from chorus.vocab import VocabLayout
from experiments.asr import AsrSettings, pad_requests


class AsrTask:
    """The chorus.rl Task: utterances of the corpus as audio prompts, transcripts as answers.

    "train" draws from the first `rl_train_pool` examples of the train split, "eval" from the
    first `rl_eval_pool` of `eval_splits[0]` (held out). Rewards (`experiment.rewards`, e.g.
    {neg_wer: 1.0}) compare the decoded text with the reference after the one normalization.
    """

    name = "asr"

    def __init__(self, config: Config, settings: AsrSettings, rl_train_pool: int = 512,
                 rl_eval_pool: int = 256):
        from data_pipelines import make_eval_iterator
        from data_pipelines.tokenizer import TextTokenizer

        for name, value in (("rl_train_pool", rl_train_pool), ("rl_eval_pool", rl_eval_pool)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"experiment.{name}: expected an int >= 1, got {value!r}")
        self.layout = VocabLayout.from_model_config(config.model)
        self.max_frames = config.train.max_mel_frames
        self.answer_width = config.decode.max_new_tokens  # <eos> included
        data_dir = os.path.expanduser(settings.data_dir)
        self.tokenizer = TextTokenizer.from_file(os.path.join(data_dir, "tokenizer.model"))

        def pool(split: str, n: int) -> list[dict]:
            examples = list(make_eval_iterator(
                "asr", data_dir, split, self.layout, dataset_name=settings.dataset,
                max_frames=self.max_frames, seq_len=config.train.seq_len,
                asr_target=settings.asr_target, max_examples=n))
            if not examples:
                raise ConfigError(f"{data_dir}: split {split!r} has no usable ASR example")
            return examples

        self.pools = {"train": pool(settings.train_split, rl_train_pool),
                      "eval": pool(settings.eval_splits[0], rl_eval_pool)}

    def prompts(self, split: str, rng: np.random.Generator, n: int):
        pool = self.pools[split]
        chosen = [pool[int(i)] for i in rng.choice(len(pool), n, replace=len(pool) < n)]
        request = pad_requests(chosen, self.layout, self.max_frames)
        audio = {k: request[k] for k in ("audio_features", "audio_mask")}
        return (request["prompts"], request["lengths"],
                [ex["reference_text"] for ex in chosen], audio)

    def answers(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        out = np.full((len(texts), self.answer_width), self.layout.pad_id, np.int32)
        lengths = np.zeros((len(texts),), np.int32)
        for i, text in enumerate(texts):
            ids = [*self.tokenizer.encode(text).tolist()[:self.answer_width - 1],
                   self.layout.eos_id]
            out[i, :len(ids)], lengths[i] = ids, len(ids)
        return out, lengths

    def corrupt(self, texts: list[str], rng: np.random.Generator) -> list[str]:
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

    def decode(self, ids: np.ndarray, length: int) -> str:
        """Text tokens up to the first <eos> (audio prompts decode to "")."""
        text = []
        for tok in np.asarray(ids)[:length]:
            if int(tok) == self.layout.eos_id:
                break
            if int(tok) < self.layout.text_size:
                text.append(int(tok))
        return self.tokenizer.decode(text)


def build_rl(config: Config) -> Experiment:
    """`chorus rl --experiment asr --algo grpo|dpo|ppo`: RL of the backbone on ASR rewards.

    The policy is the backbone alone (MTP / CTC heads are not trained by RL). data_dir
    defaults to the `--init-from` run's.
    """
    from chorus.rl.experiment import build_rl_experiment
    from chorus.rl.settings import RLSettings

    rl_settings, task_keys = RLSettings.split(config.experiment)
    pools = {k: task_keys.pop(k) for k in ("rl_train_pool", "rl_eval_pool") if k in task_keys}
    if not task_keys.get("data_dir") and rl_settings.init_from:
        from chorus.training.run_config import read_run_config

        task_keys["data_dir"] = read_run_config(rl_settings.init_from).experiment.get(
            "data_dir", "")
    settings = AsrSettings.from_config(task_keys)
    return build_rl_experiment(config, AsrTask(config, settings, **pools), name="asr_rl")
