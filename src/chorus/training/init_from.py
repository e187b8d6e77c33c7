"""Params from another run, for any experiment: a stage's init from an earlier stage, an ASR
run's backbone (`experiment.backbone_from`), an RL policy (`chorus rl --init-from`).

A run exports its inference tree (`Experiment.export_params`; `chorus.training.restore.
load_run(run).params`), with a "backbone" key for any run with a backbone. An init_fn takes
trees of it by name; nothing here knows a mode's tree.

    load_exported(run, what)       load_run(run), checked to export a "backbone"; a
                                   ConfigError naming `what` otherwise
    preload(run, what)             restores the run's exported params into a host cache:
                                   the experiment's `before_init`
    release()                      drops the cache: the experiment's `after_init`
    init_hooks(run, what)          {"before_init": preload(run), "after_init": release}, to
                                   spread into the Experiment
    pretrained(boxed, run, names)  inside init_fn: fresh boxed trees holding the cached
                                   run's trees `names[key]`
    pretrained_args(init_fn, key, mesh), feeding(args)
                                   the init program's extra argument: the values
                                   `pretrained` asks for, placed in their trees' shardings
    with_values(boxed, values)     a boxed init tree (logical axis names kept) holding values

Reading the other run is separate from building this one: `build` stays cheap and opens
nothing. The Trainer calls `before_init` only before a fresh init (never on a resume, never
by load_run) and `after_init` right after it; `pretrained`'s callback runs only when the
params are materialized. Tracing for shapes (state specs, a resume, `load_run` of the new run)
never reads the other run, which need not exist once the new run has a checkpoint.

How the values enter the init program (chorus.training.state): `pretrained_args` traces
init_fn for shapes, notes what each `pretrained` call asks for, and places those host values on
the mesh in the shardings of the trees they fill (each device gets its own shards); the program
takes them as an argument and `pretrained` picks them up inside `feeding(args)`. No host
callback runs inside a multi-device program (device 0 running Python while the other devices
wait for it at a collective is what hung XLA:CPU's 8-device init now and then) and the values
are never whole on one device. Any other trace that materializes init_fn (a user's own
`jax.jit(init_fn)`) gets them through `jax.pure_callback` from the same cache. (A callback
cannot restore the run itself: restoring runs JAX computations.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import ConfigError
from chorus.training.state import boxed_shardings, unbox

_LOADED: dict[str, Mapping[str, Any]] = {}  # run directory -> its exported params (host)


def load_exported(workdir: str, what: str):
    """`load_run(workdir)` (a chorus.training.restore.Run) whose exported params have a
    "backbone"; a ConfigError naming `what` (the config field) when there is no run or no
    backbone."""
    from chorus.training.restore import load_run

    try:
        run = load_run(os.path.abspath(os.path.expanduser(workdir)))
    except FileNotFoundError as e:
        raise ConfigError(f"{what}: expected a run directory with a checkpoint, got {workdir!r} "
                          f"({e})") from None
    if not isinstance(run.params, Mapping) or "backbone" not in run.params:
        keys = sorted(run.params) if isinstance(run.params, Mapping) else type(run.params)
        raise ConfigError(f"{what}: {workdir} exports no 'backbone' params (it has {keys}); "
                          "expected a run of a model with a backbone")
    return run


def preload(workdir: str, what: str = "experiment.init_from") -> Mapping[str, Any]:
    """The run's exported params as host arrays, restored once and kept for `pretrained`
    (one run at a time: a new run replaces the cached one)."""
    path = os.path.abspath(os.path.expanduser(workdir))
    if path not in _LOADED:
        _LOADED.clear()
        _LOADED[path] = jax.device_get(dict(load_exported(workdir, what).params))
    return _LOADED[path]


def release() -> None:
    """Drops the preloaded host copy (once the trainer's params exist, it is not needed)."""
    _LOADED.clear()


def init_hooks(workdir: str, what: str = "experiment.init_from"
               ) -> dict[str, Callable[[], Any]]:
    """The Experiment's `before_init` (preload `workdir`) and `after_init` (release it)."""
    return {"before_init": lambda: preload(workdir, what), "after_init": release}


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


@dataclasses.dataclass(frozen=True)
class _Request:
    """One `pretrained` call, as traced for shapes: which run's trees it asks for."""

    path: str  # the run directory, absolute
    workdir: str  # as the config spelled it, for messages
    what: str
    names: tuple[tuple[str, str], ...]  # (key, the run's tree name)
    expected: Any  # {key: tree of ShapeDtypeStruct}
    shardings: Any  # {key: tree of NamedSharding}, from the boxes' logical axis names


_PROBE: tuple[list[_Request], Any] | None = None  # (requests so far, mesh) while probing
_FEED: list[tuple[_Request, Any]] | None = None  # while feeding: (request, its values) to come


def _loaded_trees(path: str, workdir: str, what: str, names: Mapping[str, str],
                  expected) -> list[np.ndarray]:
    """The preloaded run's trees `names[key]`, flattened like `expected` and cast."""
    if path not in _LOADED:
        raise ConfigError(f"{what}: {workdir} is not loaded; call chorus.training."
                          "init_from.preload(run) before the params are initialized (the "
                          "experiment's before_init, which the Trainer calls)")
    exported = _LOADED[path]
    missing = sorted(n for n in names.values() if n not in exported)
    if missing:
        raise ConfigError(f"{what}: {workdir} exports no {missing} params (it has "
                          f"{sorted(exported)})")
    return _matching({k: exported[names[k]] for k in expected}, expected, workdir, what)


def _placed(request: _Request):
    """The request's values as global arrays in its shardings: each process builds only the
    shards its devices hold."""
    expected, names = request.expected, dict(request.names)
    values = _loaded_trees(request.path, request.workdir, request.what, names, expected)
    treedef = jax.tree.structure(expected)
    shardings = treedef.flatten_up_to(request.shardings)
    arrays = [jax.make_array_from_callback(v.shape, s, lambda index, v=v: v[index])
              for v, s in zip(values, shardings, strict=True)]
    return jax.tree.unflatten(treedef, arrays)


def pretrained_args(init_fn: Callable[[jax.Array], Any], key: jax.Array, mesh
                    ) -> tuple[list[_Request], list]:
    """(requests, values): for each `pretrained` call of `init_fn(key)`, traced for shapes
    (under the logical axis rules in force), what it asks for and the preloaded values placed
    on `mesh`. The values are the init program's extra argument, the requests go to
    `feeding`. ([], []) when nothing is preloaded: a `pretrained` call then falls back to the
    callback, which names the run that was never loaded."""
    global _PROBE
    if not _LOADED:
        return [], []
    if _PROBE is not None or _FEED is not None:
        raise RuntimeError("init_from.pretrained_args: already tracing an init program")
    _PROBE = ([], mesh)
    try:
        jax.eval_shape(init_fn, key)
        requests = _PROBE[0]
    finally:
        _PROBE = None
    return requests, [_placed(r) for r in requests]


@contextlib.contextmanager
def feeding(requests: list[_Request], values: list) -> Iterator[None]:
    """While the init program is traced: `pretrained` takes its values from `values` (this
    program's argument; `pretrained_args`), call by call in the order traced for shapes."""
    global _FEED
    if _PROBE is not None or _FEED is not None:
        raise RuntimeError("init_from.feeding: already tracing an init program")
    _FEED = list(zip(requests, values, strict=True))
    try:
        yield
        if _FEED:
            raise RuntimeError(f"init_fn made {len(requests) - len(_FEED)} pretrained calls "
                               f"when traced again, {len(requests)} when traced for shapes")
    finally:
        _FEED = None


def pretrained(boxed: Mapping[str, Any], workdir: str, names: Mapping[str, str],
               what: str = "experiment.init_from") -> dict[str, Any]:
    """The fresh boxed trees `boxed` ({key: tree}) holding `workdir`'s exported trees
    `names[key]` (e.g. {"policy": "backbone", "mtp": "mtp"}), for use inside init_fn.

    Under `jax.eval_shape` nothing is read. In the trainer's init program the values are the
    program's argument (`feeding`); in any other materializing trace they arrive through
    `jax.pure_callback` from `preload`'s host cache. Materializing the params without a
    preload first is an error naming the run."""
    expected = {k: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), unbox(v))
                for k, v in boxed.items()}
    path = os.path.abspath(os.path.expanduser(workdir))
    request = _Request(path, workdir, what, tuple(sorted((k, names[k]) for k in boxed)),
                       expected, None)
    if _PROBE is not None:  # tracing for shapes: note the request; values do not matter
        requests, mesh = _PROBE
        requests.append(dataclasses.replace(request, shardings=boxed_shardings(dict(boxed),
                                                                               mesh)))
        return dict(boxed)
    if _FEED is not None:
        if not _FEED:
            raise RuntimeError("init_fn made more pretrained calls when traced again than "
                               "when traced for shapes")
        wanted, values = _FEED.pop(0)
        if (wanted.path, wanted.names) != (request.path, request.names):
            raise RuntimeError(f"init_fn's pretrained calls changed between traces: "
                               f"{(request.path, request.names)} where "
                               f"{(wanted.path, wanted.names)} was traced for shapes")
        return {k: with_values(boxed[k], values[k], what) for k in boxed}

    leaves, treedef = jax.tree.flatten(expected)

    def read() -> list[np.ndarray]:
        return _loaded_trees(path, workdir, what, names, expected)

    values = jax.tree.unflatten(treedef, jax.pure_callback(read, leaves))
    return {k: with_values(boxed[k], values[k], what) for k in boxed}
