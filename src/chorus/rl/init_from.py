"""Policy params from another run's latest checkpoint (`chorus rl --init-from WORKDIR`).

The workdir may be a `chorus train` / SFT warm-up run (params = the backbone) or a `chorus rl`
run (params = {"policy", "reference", ...}: the policy is taken). Returned as host arrays.
"""

from __future__ import annotations

import os

import jax

from chorus.config import ConfigError


def load_policy_params(workdir: str):
    from chorus import sharding
    from chorus.training.checkpointing import Checkpoints
    from chorus.training.experiment import load_experiment
    from chorus.training.run_config import read_run_config
    from chorus.training.trainer import make_state_spec

    workdir = os.path.abspath(os.path.expanduser(workdir))
    if not os.path.isdir(workdir):
        raise ConfigError(f"experiment.init_from: expected a run directory, got {workdir!r}")
    config = read_run_config(workdir)
    module = config.experiment.get("module")
    if not module:
        raise ConfigError(f"experiment.init_from: {workdir}/config.json has no "
                          "experiment.module")
    experiment = load_experiment(module, config)
    mesh = sharding.make_mesh(config.mesh)
    spec = make_state_spec(config, experiment, mesh)
    ckpts = Checkpoints(workdir, read_only=True)
    try:
        step = ckpts.latest_step()
        if step is None:
            raise ConfigError(f"experiment.init_from: {workdir} has no complete checkpoint")
        state = ckpts.restore(step, spec.abstract, config).state
    finally:
        ckpts.close()
    params = jax.device_get(state.params)
    return params["policy"] if "policy" in params else params
