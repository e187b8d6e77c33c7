"""The one evaluation loop, and `chorus eval` on a checkpoint.

    evaluate_loss(loss_fn, params, batches, key=..., max_batches=...)
        -> {metric: mean over batches, ..., "batches": n}

used by the trainer's periodic eval, by `chorus eval` (experiments without an `evaluate`)
and by experiments' own `evaluate(params, workdir)` hooks. Metrics are averaged over batches
(each batch's loss is already a mean over its tokens). `evaluate_checkpoint` restores the
params only (no optimizer state) and runs the experiment's `evaluate`, or this loop.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from chorus import sharding
from chorus.atomic import write_json
from chorus.config import Config
from chorus.progress import progress
from chorus.training import distributed
from chorus.training.checkpointing import restore_params
from chorus.training.experiment import Experiment, LossFn
from chorus.training.state import run_keys
from chorus.training.step import make_eval_step, step_key

EVAL_DIR = "eval"


def host_scalars(metrics: dict) -> dict[str, float]:
    """Size-1 metrics as Python floats (others are dropped, never fetched)."""
    scalars = {k: v for k, v in metrics.items() if np.size(v) == 1}
    return {k: float(np.asarray(v).reshape(())) for k, v in jax.device_get(scalars).items()}


def close_iterator(iterator: Any) -> None:
    """Stops an iterator's workers (grain processes) when it has a close()."""
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


def params_mesh(params: Any):
    """The mesh the params live on (their leaves are NamedSharding-placed global arrays)."""
    mesh = sharding.mesh_of(params)
    if mesh is not None:
        return mesh
    raise ValueError("evaluate_loss params: expected arrays placed with a NamedSharding (as "
                     "restored or trained), got none; pass mesh=")


@functools.partial(jax.jit, static_argnums=(0,))
def _eval_step(loss_fn: LossFn, params: Any, batch: dict, key: jax.Array) -> dict:
    return make_eval_step(loss_fn)(params, batch, key)


def evaluate_loss(loss_fn: LossFn, params: Any, batches: Iterable[dict], *,
                  key: jax.Array | None = None, max_batches: int | None = None, mesh=None,
                  desc: str = "eval", console: bool = True) -> dict[str, float]:
    """Mean `loss_fn` metrics (and "loss") of `params` over this host's `batches`.

    `params`: trainable and frozen merged, global arrays (the mesh is theirs unless given).
    `key`: the loss function's key (default: a fixed one; an eval loss should not need it).
    Returns the means and "batches" (how many ran). Every host must see as many batches."""
    mesh = mesh or params_mesh(params)
    key = jax.random.key(0) if key is None else key
    sums: dict[str, float] = {}
    count = 0
    with progress(max_batches, desc, unit="batch", enabled=console) as bar:
        for host in batches:
            if max_batches is not None and count >= max_batches:
                break
            with sharding.activate(mesh):
                batch = distributed.global_batch(host, mesh)
                values = host_scalars(_eval_step(loss_fn, params, batch, key))
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1, loss=sums.get("loss", 0.0) / count)
    return {**{k: v / count for k, v in sums.items()}, "batches": count}


def evaluate_checkpoint(config: Config, experiment: Experiment, workdir: str,
                        step: int | None = None, max_batches: int | None = None,
                        devices=None, console: bool = True) -> dict[str, Any]:
    """Restores a checkpoint's params (default: the latest) and evaluates them; writes
    `workdir/eval/step_<N>.json`. Uses `experiment.evaluate` when the experiment has one,
    else the eval loop over `experiment.eval_iterator`."""
    if experiment.evaluate is None and experiment.eval_iterator is None:
        raise ValueError(f"experiment {experiment.name!r}: expected an `evaluate` or an "
                         "`eval_iterator` to evaluate with, got neither")
    mesh = sharding.make_mesh(config.mesh, devices)
    step, params = restore_params(config, experiment, workdir, mesh, step)
    result: dict[str, Any] = {"step": step, "experiment": experiment.name}
    if experiment.evaluate is not None:
        with sharding.activate(mesh):
            result.update(experiment.evaluate(params, workdir))
    else:
        batches = experiment.eval_iterator(jax.process_index(), jax.process_count(),
                                           config.train.seed)
        try:
            result.update(evaluate_loss(experiment.loss_fn_for_eval, params, batches,
                                        key=step_key(run_keys(config)[1], step),
                                        max_batches=max_batches, mesh=mesh, console=console))
        finally:
            close_iterator(batches)
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, EVAL_DIR, f"step_{step}.json"), result)
    return result
