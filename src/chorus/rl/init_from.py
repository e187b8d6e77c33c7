"""Params from another run (`chorus rl --init-from RUN`, `experiment.init_from`).

A run exports its inference tree (`Experiment.export_params`; `chorus.training.restore.
load_run(run).params`), with a "backbone" key for any run with a backbone: a `chorus train`
run of a mode ({"backbone", heads...}), the RL SFT warm-up or an RL run ({"backbone": policy,
companions...}). The RL experiment takes its policy from "backbone" and its companions (frozen
trees a task keeps, e.g. ASR's "mtp" and "ctc") from the keys of the same names. Nothing here
knows a mode's tree.

Reading the other run is separate from building this one: `preload(run)` (the RL
experiment's `before_init`, which the Trainer calls only before a fresh init) restores its
exported params into a host cache, and `pretrained`
fills a fresh init from that cache through a host callback, which runs only when the trainer
materializes params. Tracing for shapes (state specs, a resume, `load_run` of the new run)
never reads the other run, which need not exist once the new run has a checkpoint. (A
callback cannot restore the run itself: restoring runs JAX computations.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import ConfigError

_LOADED: dict[str, Mapping[str, Any]] = {}  # run directory -> its exported params (host)


def preload(workdir: str, what: str = "experiment.init_from") -> Mapping[str, Any]:
    """The run's exported params as host arrays, restored once and kept for `pretrained`
    (one run at a time: a new run replaces the cached one)."""
    path = os.path.abspath(os.path.expanduser(workdir))
    if path not in _LOADED:
        _LOADED.clear()
        _LOADED[path] = _load_exported(path, workdir, what)
    return _LOADED[path]


def release() -> None:
    """Drops the preloaded host copy (once the trainer's params exist, it is not needed)."""
    _LOADED.clear()


def _load_exported(path: str, workdir: str, what: str) -> Mapping[str, Any]:
    from chorus.training.restore import load_run

    try:
        run = load_run(path)
    except FileNotFoundError as e:
        raise ConfigError(f"{what}: expected a run directory with a checkpoint, got {workdir!r} "
                          f"({e})") from None
    if not isinstance(run.params, Mapping) or "backbone" not in run.params:
        keys = sorted(run.params) if isinstance(run.params, Mapping) else type(run.params)
        raise ConfigError(f"{what}: {path} exports no 'backbone' params (has {keys}); expected "
                          "a run of a model with a backbone")
    return jax.device_get(dict(run.params))


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


def _unboxed(tree):
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
    return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                        is_leaf=is_box)


def _matching(values: Mapping[str, Any], expected, workdir: str, what: str) -> list[np.ndarray]:
    """`values` flattened like `expected` (ShapeDtypeStructs), cast to its dtypes; a
    ConfigError naming the first tree path that differs."""
    expected_paths = jax.tree_util.tree_flatten_with_path(expected)[0]
    got = dict(jax.tree_util.tree_flatten_with_path(values)[0])
    out = []
    for path, want in expected_paths:
        name = jax.tree_util.keystr(path)
        if path not in got:
            raise ConfigError(f"{what}: {workdir} has no params at {name}; this run's model "
                              "config does not match that run's")
        value = np.asarray(got.pop(path))
        if value.shape != want.shape:
            raise ConfigError(f"{what}: {workdir} params {name}: expected shape {want.shape} "
                              f"(this run's model config), got {value.shape}")
        out.append(value.astype(want.dtype))
    if got:
        extra = jax.tree_util.keystr(next(iter(got)))
        raise ConfigError(f"{what}: {workdir} has params at {extra} that this run's model "
                          "config lacks")
    return out


def pretrained(boxed: Mapping[str, Any], workdir: str, names: Mapping[str, str],
               what: str = "experiment.init_from") -> dict[str, Any]:
    """The fresh boxed trees `boxed` ({key: tree}) holding `workdir`'s exported trees
    `names[key]` (e.g. {"policy": "backbone", "mtp": "mtp"}), for use inside init_fn.

    The values arrive through `jax.pure_callback` from `preload`'s host cache: under
    `jax.eval_shape` nothing is read; materializing the params without a preload first is
    an error naming the run."""
    expected = {k: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _unboxed(v))
                for k, v in boxed.items()}
    leaves, treedef = jax.tree.flatten(expected)

    path = os.path.abspath(os.path.expanduser(workdir))

    def read() -> list[np.ndarray]:
        if path not in _LOADED:
            raise ConfigError(f"{what}: {workdir} is not loaded; call chorus.rl.init_from."
                              "preload(run) before the params are initialized (the "
                              "experiment's before_init, which the Trainer calls)")
        exported = _LOADED[path]
        missing = sorted(n for n in names.values() if n not in exported)
        if missing:
            raise ConfigError(f"{what}: {workdir} exports no {missing} params (it has "
                              f"{sorted(exported)})")
        return _matching({k: exported[names[k]] for k in boxed}, expected, workdir, what)

    values = jax.tree.unflatten(treedef, jax.pure_callback(read, leaves))
    return {k: with_values(boxed[k], values[k], what) for k in boxed}
