"""TTS as a chorus.rl Task: the corpus' texts (+ instruction and speaker) as prompts, codec
codes as answers, the TTS rewards (experiments/tts/rewards.py: tts_cer, tts_code_cer,
tts_speaker_sim, tts_control, tts_length) on what the codes say.

    chorus rl --experiment tts --algo grpo --init-from runs/tts --workdir runs/tts_grpo \
        --set 'experiment.rewards={tts_code_cer: 1.0}'
    chorus rl --experiment tts --algo dpo --init-from runs/tts --workdir runs/tts_dpo \
        --set experiment.dpo.pairs=sampled --set experiment.dpo.samples=4

Prompts are exactly the SFT regime's eval prompts (experiments.tts.prompt.prompt_ids,
ending at <tts_start>, with the speaker clip: the first other utterance of the voice in the
split); the train pool leaves out the held-out voices and control combinations SFT never
saw; the references are `SpeechTarget.to_json()` strings, so every reward reads the full
target (text, voice, rate, pitch, volume, inline tag). Rollouts may sample only the audio
codes and <tts_end> (the task's `allowed_ids`), and stop at <tts_end>. The policy is the
backbone; the run exports {"backbone"} like a TTS run, so its directory synthesizes as one.
Settings: `experiments.tts.settings.TtsRLSettings`; data_dir, cache_key, codec_run and asr_run
default to the `--init-from` run's.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from chorus.audio import mel
from chorus.codec.features import round_up
from chorus.config import Config, ConfigError, settings_from
from chorus.rl.experiment import build_rl_experiment
from chorus.rl.rollout import stack_ids
from chorus.rl.task import Completion, Prompts
from chorus.training.experiment import Experiment
from chorus.vocab import VocabLayout
from data_pipelines.tokenizer import tokenizer_assets
from experiments.tts.experiment import CODES, open_codes
from experiments.tts.instructions import raw_held_out
from experiments.tts.prompt import prompt_ids, speaker_prompt
from experiments.tts.settings import TtsRLSettings
from experiments.tts.speaker_clips import SpeakerClips, clip_frames, speaker_clips
from experiments.tts.target import SpeechTarget

# Prompt rows are padded to a multiple of this: the rollout, scoring and train-step programs
# compile once per prompt width, and texts vary in length from batch to batch.
PROMPT_BUCKET = 64


class TtsTask:
    """The chorus.rl.task.Task: "train" draws from the first `rl_train_pool` records of the
    train split, "eval" from the first `rl_eval_pool` of `eval_splits[0]` (held out; its
    codes must be cached too: DPO's held-out pairs and the SFT answers read them). Opens no
    data until the first prompts are drawn."""

    name = "tts"

    def __init__(self, config: Config, settings: TtsRLSettings):
        self.config, self.settings = config, settings
        self.layout = layout = VocabLayout.from_model_config(config.model)
        self.end_id = layout.special("<tts_end>")
        self.stop_tokens = (self.end_id,)
        # Every SFT sequence (prompt + codes + <tts_end>) fit train.seq_len, so no target
        # the model learned needs more codes; `experiment.max_new_tokens` cuts it for speed
        # (and then cuts the reference answers too: they share the rows' width).
        self.answer_width = settings.max_new_tokens or config.train.seq_len
        mask = np.zeros(layout.size, bool)
        mask[layout.audio_code_ids(np.arange(layout.num_audio_codes))] = True
        mask[self.end_id] = True
        self.allowed_ids = mask  # audio codes and <tts_end>: what a TTS answer is made of
        self.assets = tokenizer_assets(settings.data_dir)
        self.data_dir = os.path.expanduser(settings.data_dir)
        self.splits = {"train": settings.train_split, "eval": settings.eval_splits[0]}

    @functools.cached_property
    def tokenizer(self):
        from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer

        return TextTokenizer.from_file(os.path.join(self.data_dir, TOKENIZER_FILENAME))

    @functools.cached_property
    def pools(self) -> dict[str, list[SpeechTarget]]:
        from data_pipelines.sources import open_source

        s, out = self.settings, {}
        for split, size in (("train", s.rl_train_pool), ("eval", s.rl_eval_pool)):
            source = open_source(s.dataset, self.data_dir, self.splits[split])
            # Training keeps out what SFT held out (experiments.tts.instructions).
            hold_out = split == "train" and s.hold_out
            pool = []
            for i in range(len(source)):
                if len(pool) >= size:
                    break
                raw = source[i]  # one read: a record's speech is decoded on access
                if not (hold_out and raw_held_out(raw)):
                    pool.append(SpeechTarget.from_raw(raw))
            out[split] = pool
            if not out[split]:
                key = "train_split" if split == "train" else "eval_splits"
                raise ConfigError(f"{self.data_dir}: split {self.splits[split]!r} (experiment."
                                  f"{key}) has no record; expected at least one")
        return out

    @functools.cached_property
    def caches(self) -> dict:
        """The code caches of the two splits (opened and checked against the model)."""
        return {split: open_codes(self.data_dir, self.settings.cache_key, name, self.layout)
                for split, name in self.splits.items()}

    @functools.cached_property
    def clips(self) -> dict[str, SpeakerClips] | None:
        """The speaker clips of the two splits (another utterance of each voice), None for a
        model trained without them (experiment.speaker_clip_seconds = 0)."""
        seconds = self.settings.speaker_clip_seconds
        if not seconds:
            return None
        return {split: speaker_clips(self.data_dir, self.settings.dataset, name, seconds)
                for split, name in self.splits.items()}

    def clip(self, split: str, target: SpeechTarget) -> np.ndarray | None:
        """The log-mel of the target's speaker clip (the first other utterance of its voice,
        as the SFT regime's eval examples take it), None without one."""
        if self.clips is None:
            return None
        wave = self.clips[split].choose(str(target.speaker_id), target.id, rng=None)
        return None if wave is None else mel.log_mel(wave)

    def prompt(self, target: SpeechTarget, clip_frames: int = 0) -> np.ndarray:
        """The SFT regime's prompt of the target (every control kept)."""
        return prompt_ids(self.layout, self.tokenizer.encode, target.instruction,
                          speaker_prompt(str(target.speaker_id)), target.tagged_text,
                          clip_frames)

    def prompts(self, split: str, rng: np.random.Generator, n: int) -> Prompts:
        pool = self.pools[split]
        chosen = [pool[int(i)] for i in rng.choice(len(pool), n, replace=len(pool) < n)]
        clips = [self.clip(split, t) for t in chosen]
        ids = [self.prompt(t, 0 if c is None else len(c)) for t, c in zip(chosen, clips,
                                                                          strict=True)]
        width = round_up(max(len(x) for x in ids), PROMPT_BUCKET)
        prompts, lengths = stack_ids(ids, width, self.layout.pad_id)
        audio = None
        if self.clips is not None:  # one fixed clip shape: the longest a clip can be
            frames = clip_frames(self.settings.speaker_clip_seconds)
            audio = {"audio_features": np.zeros((n, 1, frames, mel.N_MELS), np.float32),
                     "audio_mask": np.zeros((n, 1, frames), bool)}
            for i, c in enumerate(clips):
                if c is not None:
                    audio["audio_features"][i, 0, :len(c)] = c[:frames]
                    audio["audio_mask"][i, 0, :len(c)] = True
        return Prompts(prompts, lengths, tuple(t.to_json() for t in chosen), audio)

    def codes(self, target: SpeechTarget) -> np.ndarray:
        """The cached codec codes of the target's record (train split first, then eval)."""
        for cache in self.caches.values():
            entry = cache.get(target.id, (CODES,))
            if entry is not None:
                return np.asarray(entry[CODES])
        raise ConfigError(f"record {target.id!r}: no codes in the code caches "
                          f"{[c.path for c in self.caches.values()]} (experiment.cache_key="
                          f"{self.settings.cache_key!r}); expected every pool record encoded "
                          "(`chorus codec encode --split SPLIT`)")

    def answers(self, references) -> tuple[np.ndarray, np.ndarray]:
        """The records' cached codes + <tts_end> (cut to the answer width, the end kept)."""
        w = self.answer_width
        rows = [[*self.layout.audio_code_ids(self.codes(SpeechTarget.from_json(r)))[:w - 1],
                 self.end_id] for r in references]
        return stack_ids(rows, w, self.layout.pad_id)

    def corrupt(self, references, rng: np.random.Generator) -> list[str]:
        """DPO's rejected answers: the codes of another record of the same pool, of the same
        speaker when the pool has one (with other words): real, fluent codes of that voice
        that say the wrong text, so the pair differs in what is said rather than in being
        speech at all (time-reversed or truncated codes would also break the acoustics).
        Returned as that record's reference, which `answers` reads."""
        out = []
        for ref in references:
            target = SpeechTarget.from_json(ref)
            pool = next((p for p in self.pools.values() if any(t.id == target.id for t in p)),
                        self.pools["train"])
            others = [t for t in pool if t.text != target.text]
            if not others:
                raise ConfigError(f"record {target.id!r}: no other text in its prompt pool to "
                                  "pair against; expected rl_train_pool / rl_eval_pool >= 2 "
                                  "distinct texts")
            same = [t for t in others if t.speaker_id == target.speaker_id]
            choice = same or others
            out.append(choice[int(rng.integers(len(choice)))].to_json())
        return out

    def decode(self, ids: np.ndarray) -> Completion:
        """Audio codes: the ids in the code range (the rewards detokenize them)."""
        return Completion.from_ids(ids, "", self.layout)

    def companions(self, rng) -> dict:
        return {}  # a TTS run exports the backbone alone


def build_rl(config: Config) -> Experiment:
    """`chorus rl --experiment tts --algo dpo|grpo|ppo`: RL of the TTS backbone on the TTS
    rewards (the reward classes register when experiments.tts.rewards is imported)."""
    import experiments.tts.rewards  # noqa: F401  (registers the TTS reward components)

    settings = settings_from(TtsRLSettings, config.experiment)
    return build_rl_experiment(config, TtsTask(config, settings), settings, name="tts_rl")
