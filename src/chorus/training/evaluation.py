"""Eval loops: the trainer's periodic eval, experiments' `evaluate`, and `chorus eval`.

Metrics are averaged over batches (each batch's loss is already a mean over its tokens).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from chorus import sharding
from chorus.atomic import write_json
from chorus.config import Config
from chorus.training import distributed
from chorus.training.checkpointing import Checkpoints
from chorus.training.experiment import Experiment, LossFn, merge_params
from chorus.training.step import step_key


def host_scalars(metrics: dict) -> dict[str, float]:
    """Size-1 metrics as Python floats (others are dropped)."""
    out = {}
    for key, value in jax.device_get(metrics).items():
        array = np.asarray(value)
        if array.size == 1:
            out[key] = float(array.reshape(()))
    return out


def close_iterator(iterator: Any) -> None:
    """Stops an iterator's workers (grain processes) when it has a close()."""
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


def mean_metrics(run_batch: Callable[[dict], dict], batches: Iterable[dict], mesh,
                 max_batches: int | None = None) -> tuple[dict[str, float], int]:
    """Runs `run_batch` on each host batch (placed on `mesh`); (means, number of batches)."""
    sums: dict[str, float] = {}
    count = 0
    for host in batches:
        if max_batches is not None and count >= max_batches:
            break
        with sharding.activate(mesh):
            values = host_scalars(run_batch(distributed.global_batch(host, mesh)))
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
    return {k: v / count for k, v in sums.items()}, count


def params_mesh(params: Any):
    leaf = jax.tree.leaves(params)[0]
    return leaf.sharding.mesh


def loss_metrics(loss_fn: LossFn, params: Any, batches: Iterable[dict],
                 max_batches: int | None = None, seed: int = 0) -> dict[str, float]:
    """Mean loss-function metrics of `params` (sharded global arrays) over `batches`.

    For an experiment's `evaluate(params, workdir)`: the mesh is the params' own.
    """
    mesh = params_mesh(params)
    key = jax.random.key(seed)
    forward = jax.jit(lambda p, b: dict(zip(("loss", "metrics"),
                                            loss_fn(p, b, step_key(key, 0)), strict=True)))

    def run_batch(batch):
        out = forward(params, batch)
        return dict(out["metrics"], loss=out["loss"])

    means, count = mean_metrics(run_batch, batches, mesh, max_batches)
    return dict(means, batches=count)


def _restore(config: Config, experiment: Experiment, workdir: str, step: int | None,
             devices):
    """(mesh, state spec, step, Restored) of a checkpoint (default: the latest complete one)."""
    from chorus.training.trainer import make_state_spec

    mesh = sharding.make_mesh(config.mesh, devices)
    spec = make_state_spec(config, experiment, mesh)
    ckpts = Checkpoints(workdir, read_only=True)
    try:
        step = ckpts.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{ckpts.directory}: no complete checkpoint")
        restored = ckpts.restore(step, spec.abstract, config)
    finally:
        ckpts.close()
    return mesh, spec, step, restored


def restore_params(config: Config, experiment: Experiment, workdir: str,
                   step: int | None = None, devices=None):
    """(step, params with frozen trees merged back, mesh) of a checkpoint (default: latest)."""
    mesh, _, step, restored = _restore(config, experiment, workdir, step, devices)
    return step, merge_params(restored.state.params, restored.state.frozen), mesh


def evaluate_checkpoint(config: Config, experiment: Experiment, workdir: str,
                        step: int | None = None, max_batches: int | None = None,
                        devices=None) -> dict[str, Any]:
    """Restores a checkpoint (default: the latest) and evaluates it; writes
    `workdir/eval/step_<N>.json`. Uses `experiment.evaluate` when the experiment has one,
    else the eval loop over `experiment.eval_iterator`."""
    from chorus.training.trainer import replicated_array

    mesh, spec, step, restored = _restore(config, experiment, workdir, step, devices)
    state = restored.state
    result: dict[str, Any] = {"step": step, "experiment": experiment.name}
    if experiment.evaluate is not None:
        with sharding.activate(mesh):
            result.update(experiment.evaluate(merge_params(state.params, state.frozen),
                                              workdir))
    elif experiment.eval_iterator is not None:
        from chorus.training.partitioning import jit_eval_step

        rng = replicated_array(np.asarray(restored.progress["rng"], np.uint32), mesh)
        batches = experiment.eval_iterator(jax.process_index(), jax.process_count(),
                                           config.train.seed)
        eval_fn = None

        def run_batch(batch):
            nonlocal eval_fn
            if eval_fn is None:
                eval_fn = jit_eval_step(experiment.loss_fn_for_eval, spec.shardings, mesh,
                                        batch)
            return eval_fn(state, batch, rng)

        try:
            means, count = mean_metrics(run_batch, batches, mesh, max_batches)
        finally:
            close_iterator(batches)
        result.update(means, batches=count)
    else:
        raise ValueError(f"experiment {experiment.name!r}: expected an `evaluate` or an "
                         "`eval_iterator` to evaluate with, got neither")
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "eval", f"step_{step}.json"), result)
    return result
