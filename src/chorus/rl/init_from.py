"""Params from another run for an RL run (`chorus rl --init-from RUN`, `experiment.init_from`).

The RL experiment takes its policy (and reference) from RUN's exported "backbone" and its
companions (frozen trees a task keeps, e.g. ASR's "mtp" and "ctc") from RUN's trees of the
same names: any run with a backbone (a `chorus train` run of a mode, the RL SFT warm-up, an RL
run). The mechanism is the mode-agnostic one of chorus.training.init_from (`preload` as the
experiment's before_init, `release` as its after_init, `pretrained` inside init_fn); its names
are re-exported here. `inherit_settings` copies the experiment settings a mode declares
(`RL_INHERITED` in its experiment module) from RUN's config into the RL run's, so the run's
config.json says what its model is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from chorus.config import Config, ConfigError
from chorus.training.init_from import (  # noqa: F401  (re-exported)
    preload,
    pretrained,
    release,
    with_values,
)


def init_run_experiment(init_from: str) -> Mapping[str, Any] | None:
    """The `init_from` run's experiment settings; None when it has no config (yet or any
    more)."""
    from chorus.training.restore import resolve_run_dir
    from chorus.training.run_config import read_run_config

    try:
        return read_run_config(resolve_run_dir(init_from)).experiment
    except (FileNotFoundError, ConfigError):
        return None


def inherit_settings(config: Config, init_from: str, keys: Sequence[str]) -> Config:
    """`config` with each experiment key of `keys` that it leaves unset (absent or "") taken
    from the `init_from` run's config (a mapping: the run's, updated with this one's). The
    config unchanged when that run has no config (yet or any more)."""
    init = init_run_experiment(init_from)
    if init is None:
        return config
    experiment = dict(config.experiment)
    for key in keys:
        if key not in init:
            continue
        mine = experiment.get(key, "")
        if mine == "":
            experiment[key] = init[key]
        elif isinstance(mine, dict) and isinstance(init[key], dict):
            experiment[key] = {**init[key], **mine}
    return dataclasses.replace(config, experiment=experiment)
