"""The ASR experiment's settings: `--set experiment.<field>=...`, read with
`chorus.config.settings_from` (coerced, validated, unknown keys named). No file I/O here: the
data directory is checked where it is opened."""

from __future__ import annotations

import dataclasses
from typing import Literal

from chorus.analysis.attacks import PGDConfig
from chorus.audio.spec_augment import SpecAugmentConfig
from chorus.audio.speech_gate import SpeechGate
from chorus.config import Config, check, settings_from
from chorus.model.heads import MTPConfig
from chorus.rl.settings import RLSettings
from data_pipelines.augment import AugmentConfig


@dataclasses.dataclass(frozen=True)
class AsrSettings:
    data_dir: str = ""  # the prepared dataset (`--data DIR`, made by `chorus data synth`)
    dataset: str = "chorus_speech"
    train_split: str = "train"
    eval_split: str = "validation"  # the trainer's periodic eval loop
    data_workers: int = 0  # grain worker processes per host (0 = in the training process)
    asr_target: Literal["raw", "normalized"] = "raw"  # normalized: normalize_text(transcript)
    # Multi-token prediction heads; `--set experiment.mtp.num_heads=2` keeps the other fields
    # of this default. null trains the plain backbone (decoding is then greedy only).
    mtp: MTPConfig | None = MTPConfig(design="parallel", num_heads=4, loss_weight=0.3)
    # SpecAugment of the training log-mel; null = off. Evaluation never augments.
    spec_augment: SpecAugmentConfig | None = SpecAugmentConfig(
        num_freq_masks=2, max_freq_width=16, num_time_masks=2, max_time_fraction=0.08)
    # Waveform augmentation of the training clips on the host (data_pipelines.augment: speed,
    # gain, white noise); null = off. Evaluation never augments.
    augment: AugmentConfig | None = None
    # Adversarial training (Madry-style PGD on the training log-mel, experiments/asr/model.py);
    # null = off. `--set experiment.adversarial.epsilon=0.25` switches it on (log-mel units; the
    # encoder divides by audio.mel_std) with the other PGDConfig fields at their defaults.
    adversarial: PGDConfig | None = None
    # loss = (1 - w) * clean loss + w * loss on the PGD-perturbed batch (w = 1: Madry's).
    adversarial_weight: float = 0.5
    # Weight of the CTC loss over the audio adaptor frames (chorus.model.ctc); 0 = off.
    # Without it the from-scratch cpu-tiny model learns to ignore the audio.
    ctc_weight: float = 1.0
    # Weight of a character-level CTC over the 25 Hz encoder frames (chorus.model.ctc.
    # character_labels); 0 = off. Training only: it teaches the encoder the sounds that words
    # share, and no decoder reads its head.
    char_ctc_weight: float = 0.0
    # Label smoothing ε of the transcript cross-entropy (chorus.model.losses.cross_entropy);
    # the logged `ce` stays the plain NLL. The MTP heads and CTC are not smoothed.
    label_smoothing: float = 0.0
    # The frames the CTC head reads: "adaptor" (12.5 Hz, the frames the decoder sees) or
    # "encoder" (the 25 Hz encoder output the adaptor reads: ~4 frames per transcript token
    # instead of ~2, room for CTC's blanks).
    ctc_frames: Literal["adaptor", "encoder"] = "adaptor"
    # "joint": backbone + heads; "heads": a second stage on a frozen backbone.
    mtp_stage: Literal["joint", "heads"] = "joint"
    # A run directory whose latest checkpoint initializes the backbone (an ASR or RL run:
    # its exported "backbone"). The heads stage needs one.
    backbone_from: str = ""
    # the decoding table: in-distribution, held-out word pairs, held-out voices, held-out
    # speaking rates / pitches (data_pipelines.corpus_plan.SPLITS)
    eval_splits: tuple[str, ...] = ("test", "test_compositional", "test_voices",
                                    "test_prosody")
    eval_examples: int = 200  # per split
    speed_examples: int = 32  # utterances timed for greedy-vs-verified wall-clock (0 = skip)
    eval_beam_width: int = 4  # the table's joint CTC/attention beam search (0 = skip)
    # Inference: a clip the voice-activity gate finds no speech in (silence, noise, too short)
    # transcribes as "" without decoding (chorus.audio.speech_gate); null = off.
    speech_gate: SpeechGate | None = SpeechGate()

    def __post_init__(self):
        check(self.data_workers >= 0, "experiment.data_workers", "a number >= 0",
              self.data_workers)
        check(0 <= self.adversarial_weight <= 1, "experiment.adversarial_weight",
              "a number in [0, 1]", self.adversarial_weight)
        check(self.ctc_weight >= 0, "experiment.ctc_weight", "a number >= 0", self.ctc_weight)
        check(self.char_ctc_weight >= 0, "experiment.char_ctc_weight", "a number >= 0",
              self.char_ctc_weight)
        check(0 <= self.label_smoothing < 1, "experiment.label_smoothing", "a number in [0, 1)",
              self.label_smoothing)
        check(self.mtp_stage == "joint" or bool(self.backbone_from), "experiment.backbone_from",
              "the run directory of the trained backbone for mtp_stage='heads'",
              self.backbone_from)
        check(self.mtp_stage == "joint" or self.mtp is not None, "experiment.mtp",
              "MTP heads to train for mtp_stage='heads'", self.mtp)
        check(len(self.eval_splits) > 0, "experiment.eval_splits", "at least one split",
              self.eval_splits)
        check(self.eval_examples >= 1, "experiment.eval_examples", "a number >= 1",
              self.eval_examples)
        check(self.speed_examples >= 0, "experiment.speed_examples", "a number >= 0",
              self.speed_examples)
        check(isinstance(self.eval_beam_width, int) and self.eval_beam_width >= 0,
              "experiment.eval_beam_width", "an int >= 0", self.eval_beam_width)


@dataclasses.dataclass(frozen=True)
class AsrRLSettings(RLSettings, AsrSettings):
    """`chorus rl --experiment asr`: the ASR keys, the RL keys (chorus.rl.settings) and the
    prompt pools, flat (`--set experiment.group_size=8`, `--set experiment.ctc_weight=...`)."""

    rl_train_pool: int = 512  # prompts drawn from the first N examples of the train split
    rl_eval_pool: int = 256  # held-out prompts from the first N of eval_splits[0]

    def __post_init__(self):
        AsrSettings.__post_init__(self)
        RLSettings.__post_init__(self)
        for name in ("rl_train_pool", "rl_eval_pool"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"experiment.{name}", "an int >= 1",
                  value)


def asr_settings(config: Config) -> AsrSettings:
    """The settings of an ASR run, or of an RL run of one (`chorus rl` sets experiment.algo);
    either way they say which heads the model has."""
    cls = AsrRLSettings if "algo" in config.experiment else AsrSettings
    return settings_from(cls, config.experiment)


def data_dir(settings: AsrSettings) -> str:
    """The dataset directory, or an error naming the setting and how to make one."""
    import os

    path = os.path.expanduser(settings.data_dir)
    check(bool(path), "experiment.data_dir", "the dataset directory (--data DIR, e.g. made by "
          "`chorus data synth --out DIR`)", settings.data_dir)
    check(os.path.isdir(path), "experiment.data_dir", "an existing directory",
          settings.data_dir)
    return path
