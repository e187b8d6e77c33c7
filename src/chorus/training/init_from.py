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
    backbone_from(init_fn, run, what, trees)
                                   (init_fn whose "backbone" (or `trees`) is the run's, the
                                   rest fresh; its init_hooks): a mode's
                                   `experiment.backbone_from`
    pretrained(boxed, run, names)  inside init_fn: fresh boxed trees holding the cached
                                   run's trees `names[key]` (chorus.training.init_feed: how
                                   the values reach the init program)
    with_values(boxed, values)     a boxed init tree (logical axis names kept) holding values

Reading the other run is separate from building this one: `build` stays cheap and opens
nothing. The Trainer calls `before_init` only before a fresh init (never on a resume, never
by load_run) and `after_init` right after it; the values are read only when the params are
materialized. Tracing for shapes (state specs, a resume, `load_run` of the new run) never
reads the other run, which need not exist once the new run has a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from chorus.config import ConfigError
from chorus.training.init_feed import LOADED, pretrained, with_values  # noqa: F401  (re-exported)


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
    if path not in LOADED:
        LOADED.clear()
        LOADED[path] = jax.device_get(dict(load_exported(workdir, what).params))
    return LOADED[path]


def release() -> None:
    """Drops the preloaded host copy (once the trainer's params exist, it is not needed)."""
    LOADED.clear()


def init_hooks(workdir: str, what: str = "experiment.init_from"
               ) -> dict[str, Callable[[], Any]]:
    """The Experiment's `before_init` (preload `workdir`) and `after_init` (release it)."""
    return {"before_init": lambda: preload(workdir, what), "after_init": release}


def backbone_from(init_fn: Callable[[Any], dict], workdir: str,
                  what: str = "experiment.backbone_from", trees: Sequence[str] = ("backbone",)
                  ) -> tuple[Callable[[Any], dict], dict[str, Callable[[], Any]]]:
    """(init_fn, hooks): an init_fn whose `trees` (by default the "backbone") are
    `workdir`'s exported trees of the same names (the other trees stay fresh), and the
    Experiment's `init_hooks` that read the run before a fresh init only. An empty `workdir`
    returns (init_fn, {}) unchanged: a mode's `experiment.backbone_from` passed as it is.
    A tree the run does not export stops the init with an error naming `what`."""
    if not workdir:
        return init_fn, {}

    def init(rng):
        params = init_fn(rng)
        return {**params, **pretrained({name: params[name] for name in trees}, workdir,
                                       {name: name for name in trees}, what)}

    return init, init_hooks(workdir, what)
