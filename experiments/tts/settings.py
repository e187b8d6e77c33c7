"""The TTS experiment's settings: `--set experiment.<field>=...`, read with
`chorus.config.settings_from` (coerced, validated, unknown keys named). No file I/O here: the
directories are checked where they are opened."""

from __future__ import annotations

import dataclasses

from chorus.config import Config, check, settings_from
from chorus.rl.settings import RLSettings


@dataclasses.dataclass(frozen=True)
class SpeechDecoding:
    """How codes are sampled and turned into audio (`experiment.decoding.<field>`).

    Sampling is restricted to the audio codes and <tts_end>; the windowed repetition penalty
    is chorus.decoding.constraints' (CTRL over the last `repetition_window` generated codes).
    The length guard: at most ceil(len(text) * max_codes_per_char) + min_codes codes, within
    the model's context; a row that reaches it is reported as truncated."""

    temperature: float = 1.0
    top_k: int = 25
    top_p: float = 0.8
    repetition_penalty: float = 1.0  # 1 = off
    repetition_window: int = 10
    max_codes_per_char: float = 4.0
    min_codes: int = 25  # one second
    flow_steps: int | None = None  # None: the codec's own sample_steps
    guidance: float | None = None  # None: the codec's own guidance
    seed: int = 0

    def __post_init__(self):
        f = "experiment.decoding."
        check(self.temperature >= 0, f + "temperature", "a number >= 0 (0 = greedy)",
              self.temperature)
        check(self.top_k >= 0, f + "top_k", "an int >= 0 (0 = off)", self.top_k)
        check(0 < self.top_p <= 1, f + "top_p", "a number in (0, 1]", self.top_p)
        check(self.repetition_penalty >= 1, f + "repetition_penalty", "a number >= 1 (1 = off)",
              self.repetition_penalty)
        check(self.repetition_window >= 0, f + "repetition_window", "an int >= 0",
              self.repetition_window)
        check(self.max_codes_per_char > 0, f + "max_codes_per_char", "a number > 0",
              self.max_codes_per_char)
        check(self.min_codes >= 1, f + "min_codes", "an int >= 1", self.min_codes)


@dataclasses.dataclass(frozen=True)
class TtsSettings:
    data_dir: str = ""  # the prepared dataset (`--data DIR`, made by `chorus data synth`)
    cache_key: str = ""  # producer key of the codec's record cache under <data_dir>/caches/
    dataset: str = "chorus_speech"
    train_split: str = "train"
    eval_split: str = "validation"  # the trainer's periodic eval loop (loss)
    data_workers: int = 0  # grain worker processes per host
    control_dropout: float = 0.0  # per example: chance to drop the instruction / the speaker
    paraphrase: bool = True  # training instructions in varied phrasings (instructions.py)
    hold_out: bool = True  # held-out voices / control combinations never trained on
    # Speaker prompt: this much of another utterance of the voice, through the audio encoder
    # (experiments/tts/speaker_clips.py); 0 = the speaker text only.
    speaker_clip_seconds: float = 2.0
    # The codec run whose codes the model speaks (its producer key is cache_key): synthesis,
    # the listening rewards and the evaluation detokenize through it; they refuse "" (the code
    # cache does not record which run wrote it).
    codec_run: str = ""
    # The ASR run that judges intelligibility (the CER reward, the evaluation's chorus judge).
    asr_run: str = ""
    decoding: SpeechDecoding = SpeechDecoding()
    eval_splits: tuple[str, ...] = ("test",)  # the evaluation table (`chorus eval`)
    eval_examples: int = 24  # per split: each is synthesized, detokenized and transcribed

    def __post_init__(self):
        check(bool(self.data_dir), "experiment.data_dir",
              "the dataset directory (--data DIR, e.g. made by `chorus data synth`)",
              self.data_dir)
        check(bool(self.cache_key), "experiment.cache_key",
              "the producer key of the codec's record cache (written by its corpus encoding)",
              self.cache_key)
        check(self.data_workers >= 0, "experiment.data_workers", ">= 0", self.data_workers)
        check(0.0 <= self.control_dropout <= 1.0, "experiment.control_dropout",
              "a probability in [0, 1]", self.control_dropout)
        check(0 <= self.speaker_clip_seconds <= 10, "experiment.speaker_clip_seconds",
              "seconds in [0, 10] (0 = no speaker clip)", self.speaker_clip_seconds)
        check(len(self.eval_splits) > 0, "experiment.eval_splits", "at least one split",
              self.eval_splits)
        check(self.eval_examples >= 1, "experiment.eval_examples", "an int >= 1",
              self.eval_examples)


@dataclasses.dataclass(frozen=True)
class TtsRLSettings(RLSettings, TtsSettings):
    """`chorus rl --experiment tts`: the TTS keys, the RL keys (chorus.rl.settings) and the
    prompt pools, flat (`--set experiment.group_size=4`)."""

    rl_train_pool: int = 256  # prompts drawn from the first N records of the train split
    rl_eval_pool: int = 64  # held-out prompts from the first N of eval_splits[0]

    def __post_init__(self):
        TtsSettings.__post_init__(self)
        RLSettings.__post_init__(self)
        for name in ("rl_train_pool", "rl_eval_pool"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"experiment.{name}", "an int >= 1",
                  value)


def tts_settings(config: Config) -> TtsSettings:
    """The settings of a TTS run, or of an RL run of one (`chorus rl` sets experiment.algo)."""
    cls = TtsRLSettings if "algo" in config.experiment else TtsSettings
    return settings_from(cls, config.experiment)
