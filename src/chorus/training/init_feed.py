"""Another run's values inside the init program: what `init_from.pretrained` asks for, and
how the values get there. chorus.training.init_from loads a run into `LOADED` (its `preload`);
chorus.training.state's init program takes the values from here.

    pretrained(boxed, run, names)      inside init_fn: fresh boxed trees holding the loaded
                                       run's trees `names[key]`
    pretrained_args(init_fn, key, mesh)
                                       (requests, values): init_fn traced for shapes, each
                                       `pretrained` call's values placed on the mesh in the
                                       shardings of the trees they fill
    feeding(requests, values)          while the init program is traced: `pretrained` takes
                                       those values (the program's argument)
    with_values(boxed, values)         a boxed init tree (logical axis names kept) holding values

Why an argument and not a host callback: device 0 running Python inside an 8-device program
while the 7 others waited for it at a collective hung XLA:CPU now and then, and a callback's
values are whole on one device before they are resharded. Any other trace that materializes
init_fn (a user's own `jax.jit(init_fn)`) still gets them through `jax.pure_callback`.
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
from chorus.sharding import boxed_shardings, unbox

LOADED: dict[str, Mapping[str, Any]] = {}  # run directory -> its exported params (host)


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
    if path not in LOADED:
        raise ConfigError(f"{what}: {workdir} is not loaded; call chorus.training."
                          "init_from.preload(run) before the params are initialized (the "
                          "experiment's before_init, which the Trainer calls)")
    exported = LOADED[path]
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
    if not LOADED:
        return [], []
    if _PROBE is not None or _FEED is not None:
        raise RuntimeError("init_feed.pretrained_args: already tracing an init program")
    _PROBE = ([], mesh)
    try:
        # a fresh function: eval_shape caches traces by function, and an earlier trace of
        # init_fn (the state specs) would leave `pretrained` uncalled here
        jax.eval_shape(lambda k: init_fn(k), key)
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
        raise RuntimeError("init_feed.feeding: already tracing an init program")
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
