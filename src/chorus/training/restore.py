"""Restoring a trained model for inference: from the run directory alone, params only.

    run = load_run(workdir, overrides=("mesh.data=1",), step=None, devices=None)
    run.config, run.experiment, run.step, run.mesh
    run.params      experiment.export_params(checkpoint params): the mode's inference tree
                    ({"backbone", ...}), arrays placed on run.mesh
    asset_path(workdir, "tokenizer.model")

`load_run` reads `workdir/config.json`, applies the `--set` overrides (another mesh, decode
settings: only the parameter shapes must stay those of the checkpoint), imports the run's
`experiment.module`, builds the experiment (cheap: `build` opens no data) and restores only
the `params` and `frozen` subtrees of the checkpoint (an orbax partial restore; the optimizer
state, data position and RNG are never read). The training data need not exist: what
inference needs besides params is in `workdir/assets/`.

A staged run's directory (`W/stages.json`, one run per stage in `W/<stage>/`) resolves to its
last stage; pass `W/<stage>` for another one.

The trainer's own resume is the full restore (`Checkpoints.restore`), not this.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax

from chorus import sharding
from chorus.config import Config, ConfigError, apply_overrides
from chorus.training.assets import asset_path as asset_path  # public here (the contract)
from chorus.training.checkpointing import restore_params
from chorus.training.experiment import Experiment, ExperimentError, load_experiment
from chorus.training.run_config import CONFIG_NAME, read_run_config
from chorus.training.stages import STAGES_NAME, read_stages


@dataclasses.dataclass(frozen=True)
class Run:
    workdir: str
    config: Config
    experiment: Experiment
    step: int
    params: Any  # export_params(trainable + frozen), placed on `mesh`
    mesh: Any


def resolve_run_dir(workdir: str) -> str:
    """The directory holding config.json: `workdir`, or a staged run's last stage."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"{workdir}: no such run directory")
    if not os.path.exists(os.path.join(workdir, CONFIG_NAME)) and os.path.exists(
            os.path.join(workdir, STAGES_NAME)):
        names = [s.name for s in read_stages(workdir)]
        return os.path.join(workdir, names[-1])
    return workdir


def load_run(workdir: str, overrides: Sequence[str] = (), step: int | None = None,
             devices: Sequence[jax.Device] | None = None) -> Run:
    """The run in `workdir` for inference: its config (+ overrides), experiment and params."""
    workdir = resolve_run_dir(workdir)
    config = apply_overrides(read_run_config(workdir), list(overrides))
    module = config.experiment.get("module")
    if not module:
        raise ConfigError(f"{workdir}/{CONFIG_NAME}: no experiment.module; was this run "
                          "written by `chorus train`?")
    try:
        experiment = load_experiment(module, config)
    except ExperimentError as e:
        raise ExperimentError(f"{workdir}: {e}") from None
    mesh = sharding.make_mesh(config.mesh, devices)
    step, params = restore_params(config, experiment, workdir, mesh, step)
    return Run(workdir=workdir, config=config, experiment=experiment, step=step,
               params=experiment.inference_params(params), mesh=mesh)
