"""ASR: speech in, transcript out. One regime of the shared backbone, top to bottom:

    data     a prepared speech dataset (default `chorus_speech`, made by `chorus data synth`)
             -> data_pipelines' packed ASR batches (the batch contract of docs/data.md)
    prompt   <asr> <audio>xN <transcript>        N = one placeholder per 80 ms of audio
    target   text ... <eos>                      loss_mask marks exactly these positions
    loss     next-token cross-entropy on the target positions (+ token accuracy)
    eval     loss / token accuracy on the validation split

    chorus train --experiment asr --preset cpu-tiny --workdir runs/asr --data DATA_DIR
    chorus eval  --workdir runs/asr

Settings (`--set experiment.<key>=...`): data_dir (`--data`), dataset, train_split,
eval_split, data_workers, asr_target — see `AsrSettings`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax

from chorus.config import Config, ConfigError
from chorus.model.factory import example_batch
from chorus.model.unified import UnifiedAudioLM
from chorus.training.evaluation import loss_metrics
from chorus.training.experiment import Experiment
from chorus.training.flops import backbone_train_flops
from chorus.training.losses import cross_entropy, token_accuracy
from chorus.vocab import VocabLayout

# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class AsrSettings:
    """The experiment's own config extras (config.experiment)."""

    data_dir: str
    dataset: str = "chorus_speech"
    train_split: str = "train"
    eval_split: str = "validation"
    data_workers: int = 0  # grain worker processes per host (0 = in the training process)
    asr_target: str = "raw"  # "normalized": train on normalize_text(transcript)

    def __post_init__(self):
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError("experiment.data_dir: expected the dataset directory (--data DIR, "
                              f"e.g. made by `chorus data synth --out DIR`), got "
                              f"{self.data_dir!r}")
        if not os.path.isdir(os.path.expanduser(self.data_dir)):
            raise ConfigError(f"experiment.data_dir: expected an existing directory, got "
                              f"{self.data_dir!r}")
        if self.data_workers < 0:
            raise ConfigError(f"experiment.data_workers: expected >= 0, got "
                              f"{self.data_workers}")
        if self.asr_target not in ("raw", "normalized"):
            raise ConfigError(f"experiment.asr_target: expected 'raw' or 'normalized', got "
                              f"{self.asr_target!r}")

    @classmethod
    def from_config(cls, extras: Mapping[str, Any]) -> AsrSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in extras.items() if k != "module"}  # module: chorus train's
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"experiment: unknown ASR setting(s) {unknown}; expected some of "
                              f"{sorted(known)}")
        values.setdefault("data_dir", "")
        return cls(**values)


# ----------------------------------------------------------------------------- data


def _iterator_args(config: Config, settings: AsrSettings, layout: VocabLayout) -> dict:
    t = config.train
    return dict(task="asr", data_dir=os.path.expanduser(settings.data_dir), layout=layout,
                seq_len=t.seq_len, max_clips=t.max_audio_clips, max_frames=t.max_mel_frames,
                dataset_name=settings.dataset, asr_target=settings.asr_target)


def make_data(config: Config, settings: AsrSettings, layout: VocabLayout):
    """(train_iterator, eval_iterator) factories: (shard_index, shard_count, seed) -> iterator.

    Each host reads its own records and builds batch_size // shard_count rows of the batch.
    """
    from data_pipelines import make_train_iterator

    base = _iterator_args(config, settings, layout)

    def train_iterator(shard_index: int, shard_count: int, seed: int):
        return make_train_iterator(
            split=settings.train_split, batch_size=config.train.batch_size // shard_count,
            seed=seed, shard_index=shard_index, shard_count=shard_count,
            num_workers=settings.data_workers, **base)

    def eval_iterator(shard_index: int, shard_count: int, seed: int):
        # One ordered pass: the same eval batches every time.
        return make_train_iterator(
            split=settings.eval_split, batch_size=config.train.batch_size // shard_count,
            seed=seed, shard_index=shard_index, shard_count=shard_count, num_epochs=1,
            shuffle=False, **base)

    return train_iterator, eval_iterator


# ----------------------------------------------------------------------------- model + loss


def make_init_fn(model: UnifiedAudioLM, config: Config):
    """rng -> boxed backbone params (logical axis names on the leaves; the trainer shards)."""
    b = example_batch(config, 1, 8)

    def init_fn(rng):
        return model.init(rng, b["tokens"], b["positions"], b["segment_ids"],
                          b["audio_features"], b["audio_mask"])["params"]

    return init_fn


def make_loss_fn(model: UnifiedAudioLM):
    """Cross-entropy of the transcript (+ <eos>) given <asr> and the audio."""

    def loss_fn(params, batch, rng):
        del rng  # no dropout in the backbone
        out = model.apply({"params": params}, batch["tokens"], batch["positions"],
                          batch["segment_ids"], batch["audio_features"], batch["audio_mask"])
        loss, count = cross_entropy(out["logits"], batch["targets"], batch["loss_mask"])
        return loss, {
            "accuracy": token_accuracy(out["logits"], batch["targets"], batch["loss_mask"]),
            "target_tokens": count,
            # 0 when the pipeline sized the <audio> placeholders to the clips (it should)
            "audio_placeholder_excess": abs(out["audio_placeholder_excess"]).sum(),
        }

    return loss_fn


# ----------------------------------------------------------------------------- experiment


def build(config: Config) -> Experiment:
    settings = AsrSettings.from_config(config.experiment)
    layout = VocabLayout.from_model_config(config.model)
    model = UnifiedAudioLM(config)
    loss_fn = make_loss_fn(model)
    train_iterator, eval_iterator = make_data(config, settings, layout)
    t = config.train

    def evaluate(params, workdir: str) -> dict:
        del workdir
        with eval_iterator(jax.process_index(), jax.process_count(), t.seed) as batches:
            return loss_metrics(loss_fn, params, batches)

    return Experiment(
        name="asr", init_fn=make_init_fn(model, config), loss_fn=loss_fn,
        train_iterator=train_iterator, eval_iterator=eval_iterator, evaluate=evaluate,
        flops_per_batch=backbone_train_flops(config, t.batch_size, t.seq_len,
                                             t.max_audio_clips, t.max_mel_frames),
        tokens_per_batch=t.batch_size * t.seq_len)
