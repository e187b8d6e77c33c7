"""The speech codec, trained on the shared stack: four stages of the one Trainer.

    chorus data synth --out DATA --hours 2                      # the chorus_speech dataset
    chorus train --experiment codec --workdir W --data DATA     # = chorus codec train ...
    chorus codec eval --workdir W                               # W/eval.{json,md}
    chorus codec encode in.wav codes.npy --workdir W            # 25 codes per second
    chorus codec decode codes.npy out.wav --workdir W [--speaker ref.wav | --voice NAME]

Stages (each its own Trainer run in W/<stage>/: orbax checkpoints with the data position,
exact resume, metrics, the non-finite guard; chorus.training.stages):

    speaker    speaker encoder, CosFace over the training voices        -> W/speaker
    tokenizer  FSQ tokenizer, CTC over characters + mel reconstruction   -> W/tokenizer
               then the train split is encoded once into a RecordCache beside the dataset
               (codes + speaker embeddings; corpus_codes.py) and W/voices.json is written
    flow       flow-matching detokenizer on the cached codes             -> W/flow
    vocoder    Vocos-style vocoder on waveform crops                     -> W/vocoder

Files: settings.py (CodecSettings, read_settings), data.py (records -> each stage's batches),
losses.py (the four objectives), corpus_codes.py (the corpus as codes), evaluation.py
(`chorus codec eval`), cli.py (`chorus codec`). The networks and the inference object
(`chorus.codec.pipeline.Codec.load(W)`) live in chorus.codec.
"""

from __future__ import annotations

import os

from chorus.codec.models import NETWORKS
from chorus.config import Config
from chorus.training.experiment import Experiment
from chorus.training.stages import Stage
from experiments.codec.settings import CodecSettings, read_settings

# The verbs this mode adds to `chorus` (read by chorus.cli without importing this module).
COMMANDS = {"codec": ("experiments.codec.cli:main",
                      "speech codec: train | encode | decode | eval")}


def stages(config: Config) -> list[Stage]:
    """The four stages in training order (one per network), each with its schedule as
    train.* / optim.*."""
    settings = read_settings(config)
    return [Stage(name, settings.schedule(name).overrides()) for name in NETWORKS]


def build(config: Config) -> Experiment:
    """One stage's experiment (`experiment.stage`, set by `chorus train`). Opens no data."""
    from experiments.codec import data, losses

    settings = read_settings(config)
    stage = config.experiment.get("stage", "")  # the stage runner's keys
    run_dir = config.experiment.get("run_dir", "")
    if stage not in NETWORKS:
        raise ValueError(f"experiment.stage: expected one of the codec stages {list(NETWORKS)} "
                         f"(set by `chorus train --experiment codec`, which runs them all), "
                         f"got {stage!r}")
    objective = losses.objective(stage, settings.codec, settings.num_speaker_classes)

    def train_iterator(shard_index: int, shard_count: int, seed: int):
        cache = corpus_cache(settings, run_dir) if stage == "flow" else None
        return data.train_iterator(settings, stage, config.train.batch_size, shard_index,
                                   shard_count, seed, cache=cache)

    return Experiment(name=f"codec/{stage}", init_fn=objective.init_fn,
                      loss_fn=objective.loss_fn, train_iterator=train_iterator,
                      export_params=objective.export_params)


def corpus_cache(settings: CodecSettings, run_dir: str):
    """The train split as codes (encoded once by the finished speaker + tokenizer stages)
    and the run's voice table (written with a new cache, or when missing: a resumed flow
    stage does not re-read the train split for it)."""
    from chorus.codec.pipeline import VOICES_NAME
    from experiments.codec import corpus_codes
    from experiments.codec.data import check_data_dir

    if not run_dir:
        raise ValueError("experiment.run_dir: expected the codec run directory (set by "
                         "`chorus train`), got ''")
    data_dir = check_data_dir(settings)
    cache, written = corpus_codes.corpus_codes(run_dir, data_dir, settings.train_split,
                                               settings.dataset)
    if written or not os.path.isfile(os.path.join(run_dir, VOICES_NAME)):
        corpus_codes.write_voice_table(run_dir, cache, data_dir, settings.dataset,
                                       settings.train_split, settings.heldout_speaker_ids)
    return cache

