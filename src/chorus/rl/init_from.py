"""Policy params from another run's latest checkpoint (`chorus rl --init-from WORKDIR`).

The workdir may be a `chorus train` / SFT warm-up run (params = the backbone, or
{"backbone", heads...} for experiments such as ASR: the backbone is taken) or a `chorus rl` run
(params = {"policy", "reference", ...}: the policy is taken). Returned as host arrays.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from chorus.config import ConfigError


def load_policy_params(workdir: str, what: str = "experiment.init_from"):
    from chorus import sharding
    from chorus.training.checkpointing import Checkpoints
    from chorus.training.experiment import load_experiment
    from chorus.training.run_config import read_run_config
    from chorus.training.trainer import make_state_spec

    workdir = os.path.abspath(os.path.expanduser(workdir))
    if not os.path.isdir(workdir):
        raise ConfigError(f"{what}: expected a run directory, got {workdir!r}")
    config = read_run_config(workdir)
    module = config.experiment.get("module")
    if not module:
        raise ConfigError(f"{what}: {workdir}/config.json has no experiment.module")
    experiment = load_experiment(module, config)
    mesh = sharding.make_mesh(config.mesh)
    spec = make_state_spec(config, experiment, mesh)
    ckpts = Checkpoints(workdir, read_only=True)
    try:
        step = ckpts.latest_step()
        if step is None:
            raise ConfigError(f"{what}: {workdir} has no complete checkpoint")
        state = ckpts.restore(step, spec.abstract, config).state
    finally:
        ckpts.close()
    params = jax.device_get(state.params)
    if "policy" in params:  # a chorus rl run
        return params["policy"]
    # Experiments with heads beside the backbone (ASR: {"backbone", "mtp", "ctc"}).
    return params["backbone"] if "backbone" in params else params


def with_values(boxed, values, what: str = "experiment.init_from"):
    """The boxed init tree (logical axis names kept) holding `values` (a plain tree), e.g. a
    fresh init_fn's backbone filled with a checkpoint's."""
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
    try:
        return jax.tree.map(lambda box, v: box.replace_boxed(jnp.asarray(v)) if is_box(box)
                            else jnp.asarray(v), boxed, values, is_leaf=is_box)
    except ValueError as e:
        raise ConfigError(f"{what}: the checkpoint's params do not match this model config "
                          f"({e})") from None
