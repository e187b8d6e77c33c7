"""The codec experiment's settings: `config.experiment`, typed.

    settings = read_settings(config)      # chorus.config.settings_from(CodecSettings, ...)

Three kinds of fields, all overridable with `--set experiment.<field>=...`:

* the networks: `mel`, `fsq`, `tokenizer`, `flow`, `vocoder`, `speaker`, `streaming` — the
  sections of `chorus.codec.config.CodecConfig` (so `--set experiment.flow.dim=64`);
* the data: which dataset and splits, and which voices are held out;
* the schedule of each stage (`experiment.train.<stage>.steps=...`): `stages(config)` maps it
  onto the shared `train.*` / `optim.*` sections of each stage's run, so a stage's
  `config.json` says how it was trained in the trainer's own words.

`experiment.stage` and `experiment.run_dir` are the stage runner's (chorus.training.stages),
read by `build` from the config, not settings.
"""

from __future__ import annotations

import dataclasses

from chorus.codec.config import CodecConfig
from chorus.config import Config, ConfigError, check, positive, settings_from

# Held out of codec training: their clips measure the speaker encoder on unseen voices.
# One per accent family, both genders and the unusual variants (as the old corpus's
# croak / klatt / Annie), spread over the catalog of data_pipelines.voices.
DEFAULT_HELDOUT_VOICES = ("en-gb+croak", "en-gb+klatt", "en-gb+Annie", "en-us+f3",
                          "en-gb-scotland+m2", "en-029+f1", "en-us-nyc+m5",
                          "en-gb-x-rp+belinda")


@dataclasses.dataclass(frozen=True)
class StageSchedule:
    """How long and how fast one stage trains: becomes the stage run's train.* / optim.*."""

    _prefix = "train.<stage>"
    steps: int
    batch_size: int
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    end_lr_ratio: float = 0.05

    def __post_init__(self):
        positive(self, "steps", "batch_size", "learning_rate")
        check(self.warmup_steps >= 0, "train.<stage>.warmup_steps", "a number >= 0",
              self.warmup_steps)
        check(0 <= self.end_lr_ratio <= 1, "train.<stage>.end_lr_ratio", "a ratio in [0, 1]",
              self.end_lr_ratio)

    def overrides(self) -> tuple[str, ...]:
        return (f"train.steps={self.steps}", f"train.batch_size={self.batch_size}",
                f"optim.learning_rate={self.learning_rate}",
                f"optim.warmup_steps={self.warmup_steps}",
                f"optim.end_lr_ratio={self.end_lr_ratio}")


@dataclasses.dataclass(frozen=True)
class Schedules:
    """cpu-tiny: about 13 CPU-minutes for the four stages on 2 cores (docs/codec.md)."""

    # 160 training voices (chorus_speech) need more steps than the 12 of the old corpus:
    # 250 steps left the CosFace train accuracy at 19%, 1500 reach 66%.
    speaker: StageSchedule = StageSchedule(steps=1500, batch_size=32, warmup_steps=100)
    tokenizer: StageSchedule = StageSchedule(steps=800, batch_size=16)
    flow: StageSchedule = StageSchedule(steps=1000, batch_size=16)
    vocoder: StageSchedule = StageSchedule(steps=1000, batch_size=16)


@dataclasses.dataclass(frozen=True)
class CodecSettings(CodecConfig):
    """The networks (CodecConfig's sections) + data + per-stage schedules."""

    # Data: a prepared TFDS dataset (`chorus data synth --out DIR` makes chorus_speech).
    data_dir: str = ""
    dataset: str = "chorus_speech"
    train_split: str = "train"
    # Held-out sentences of the training voices (resynthesis and seen-voice EER).
    eval_splits: tuple[str, ...] = ("test", "validation")
    # data_pipelines.voices names; their records (any split) are never trained on, and are
    # the unseen-voice EER's trials.
    heldout_voices: tuple[str, ...] = DEFAULT_HELDOUT_VOICES
    # Classes of the speaker encoder's CosFace head: speaker ids are in [0, speaker_classes);
    # 0 = the size of the voice catalog (chorus_speech's speaker_id is the catalog index).
    speaker_classes: int = 0
    data_workers: int = 0  # grain worker processes per host (0 = in the training process)
    train: Schedules = Schedules()

    def __post_init__(self):
        super().__post_init__()
        from data_pipelines.voices import VOICES  # the synthesis catalog (plain data)

        known = {v.name for v in VOICES}
        for i, name in enumerate(self.heldout_voices):
            check(name in known, f"experiment.heldout_voices[{i}]",
                  "a data_pipelines.voices name such as 'en-gb+f3'", name)
        check(len(set(self.heldout_voices)) == len(self.heldout_voices),
              "experiment.heldout_voices", "distinct voices", self.heldout_voices)
        check(len(self.eval_splits) > 0, "experiment.eval_splits", "at least one split",
              self.eval_splits)
        check(self.train_split not in self.eval_splits, "experiment.eval_splits",
              f"splits other than experiment.train_split={self.train_split!r}",
              self.eval_splits)
        check(self.speaker_classes >= 0, "experiment.speaker_classes",
              "a number >= 0 (0 = the voice catalog)", self.speaker_classes)
        check(self.data_workers >= 0, "experiment.data_workers", "a number >= 0",
              self.data_workers)

    @property
    def codec(self) -> CodecConfig:
        """The network sections alone (what `chorus.codec.pipeline.Codec` needs)."""
        return CodecConfig(**{f.name: getattr(self, f.name)
                              for f in dataclasses.fields(CodecConfig)})

    @property
    def num_speaker_classes(self) -> int:
        from data_pipelines.voices import VOICES

        return self.speaker_classes or len(VOICES)

    @property
    def heldout_speaker_ids(self) -> frozenset[str]:
        """The held-out voices as values of the records' speaker field (catalog indices)."""
        from data_pipelines.voices import get_voice

        return frozenset(str(get_voice(name).speaker_id) for name in self.heldout_voices)

    def schedule(self, stage: str) -> StageSchedule:
        return getattr(self.train, stage)


def read_settings(config: Config) -> CodecSettings:
    """The codec settings of a run's config, checked against the backbone it will speak to."""
    settings = settings_from(CodecSettings, config.experiment)
    codes, backbone = settings.fsq.num_codes, config.model.num_audio_codes
    if codes != backbone:
        raise ConfigError(
            f"experiment.fsq.levels: expected levels whose product is model.num_audio_codes="
            f"{backbone} (the codes the backbone of preset {config.name!r} speaks), got "
            f"{list(settings.fsq.levels)} = {codes} codes; set experiment.fsq.levels (e.g. "
            f"[3,3,3,3,3,3,3,3] for 6561) or model.num_audio_codes")
    return settings
