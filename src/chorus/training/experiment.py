"""The contract between an experiment (a mode, an algorithm) and the one trainer.

An experiment module `experiments/<name>.py` (or any importable module) defines
`build(config) -> Experiment`. The trainer knows nothing of ASR / TTS / dialogue / DPO: it
initializes what `init_fn` returns, shards it by the logical axis names the leaves carry,
differentiates `loss_fn`, and feeds it batches from `train_iterator`. `build` must be cheap
and must not open data (inference builds the experiment from a run directory alone): open
files in the iterator factories and `evaluate`.

    init_fn(rng)                   -> dict of flax-boxed params (nn.LogicallyPartitioned
                                      leaves; plain arrays are replicated). Top-level keys named
                                      in `frozen` get no gradients and no optimizer state (an RL
                                      reference policy); `loss_fn` sees all keys.
    loss_fn(params, batch, rng)    -> (scalar loss, {name: scalar metric})
    eval_loss_fn                   -> same signature, for the eval loop (optional; default
                                      loss_fn): the loss without training-only randomness
                                      such as SpecAugment
    train_iterator(shard_index, shard_count, seed)
                                   -> iterator of this host's share of the global batch
                                      (train.batch_size // shard_count rows), with
                                      get_state() -> JSON-able and set_state(state)
    eval_iterator(...)             -> same signature; batches for the eval loop (optional)
    evaluate(params, workdir)      -> {name: value}; heavier evaluation (decoding, WER) run by
                                      `chorus eval` (optional). `params` are the checkpoint's
                                      (trainable and frozen merged); use
                                      chorus.training.evaluation.evaluate_loss for losses
    flops_per_batch                -> model FLOPs of one train step on the global batch (MFU)
    tokens_per_batch               -> tokens per global batch (throughput); default: the size
                                      of batch["tokens"]
    policy_sink(params)            -> None; optional, for on-policy RL: called with the current
                                      (trainable + frozen) params right before each train batch
                                      is drawn, so the train iterator can sample rollouts from
                                      them. Batches are then drawn inline (no prefetch thread):
                                      each depends on the step before it.
    assets                         -> {name: source file}: copied into `<workdir>/assets/<name>`
                                      when a run starts (atomically; a resume copies only what
                                      is missing). Inference reads them from the run directory
                                      (`chorus.training.restore.asset_path(workdir, name)`), so
                                      a run directory is enough without the training data.
    export_params(params)          -> the mode's canonical inference tree from the checkpoint's
                                      params (trainable and frozen merged), with a "backbone"
                                      key when the run has one (ASR: {"backbone", "mtp",
                                      "ctc"}; RL: {"backbone": policy, **companions}).
                                      Optional; default identity. `load_run(workdir).params`.
    before_init()                  -> None; optional: called by the Trainer right before it
                                      initializes fresh params (never on a resume, never by
                                      load_run), e.g. to read another run whose params an
                                      init_fn takes over (chorus.training.init_from.preload)
    after_init()                   -> None; optional: called by the Trainer right after it
                                      initialized fresh params (the same occasions as
                                      before_init), e.g. to drop what before_init read
                                      (init_from.release); `init_from.init_hooks(run)`
                                      gives both

Params from another run: `build` does not read it (it must stay cheap). init_fn fills its
fresh trees with `chorus.training.init_from.pretrained(trees, run, names)`, whose values
the init program takes as an argument (chorus.training.init_feed), from the copy
`before_init=preload` restored; `after_init=release` drops that copy. Tracing for shapes
never reads the run.

Staged experiments: a module may also define `stages(config) -> [Stage(name, overrides)]`
(chorus.training.stages). `chorus train --experiment E --workdir W` then runs each stage in
order as its own run in `W/<name>/`, with the config `base + stage.overrides +
experiment.stage=<name> + experiment.run_dir=W`; a later stage finds an earlier stage's run
at `os.path.join(config.experiment["run_dir"], name)` and initializes from it as above
(`**init_from.init_hooks(that run)` and `pretrained` in its init_fn), never in `build`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from chorus.config import Config

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


@runtime_checkable
class BatchIterator(Protocol):
    """What the trainer needs from a data iterator: batches and a resumable position."""

    def __next__(self) -> dict: ...

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...


IteratorFactory = Callable[[int, int, int], BatchIterator]


class GlobalRowBatches:
    """A generated BatchIterator whose row r of step s is a pure function of (s, r), r
    indexing the global batch: each host builds its own rows (`rows`, from `shard_rows`), any
    split over hosts sees the same global batch, and the step alone is the resume state.
    Subclasses set `rows` and implement `_row(step, row) -> {name: array}`."""

    rows: range
    step: int = 0

    @staticmethod
    def shard_rows(batch_size: int, shard_index: int, shard_count: int) -> range:
        """This host's rows of a global batch split evenly over `shard_count` hosts."""
        local = batch_size // shard_count
        return range(shard_index * local, (shard_index + 1) * local)

    def _row(self, step: int, row: int) -> dict:
        raise NotImplementedError

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rows = [self._row(self.step, r) for r in self.rows]
        self.step += 1
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.step = int(state["step"])


class ExperimentError(ValueError):
    """An experiment is missing or malformed; the message names what and where."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    init_fn: Callable[[jax.Array], Any]
    loss_fn: LossFn
    train_iterator: IteratorFactory
    eval_iterator: Callable[[int, int, int], Iterator[dict]] | None = None
    evaluate: Callable[[Any, str], dict] | None = None
    flops_per_batch: float | None = None
    tokens_per_batch: int | None = None
    frozen: tuple[str, ...] = ()
    policy_sink: Callable[[Any], None] | None = None
    eval_loss_fn: LossFn | None = None
    assets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    export_params: Callable[[Any], Any] | None = None
    before_init: Callable[[], None] | None = None
    after_init: Callable[[], None] | None = None

    @property
    def loss_fn_for_eval(self) -> LossFn:
        return self.eval_loss_fn or self.loss_fn

    def inference_params(self, params: Any) -> Any:
        """`export_params(params)`, or the params themselves without one."""
        return params if self.export_params is None else self.export_params(params)

    def __post_init__(self):
        where = f"Experiment {self.name!r}"
        for field in ("init_fn", "loss_fn", "train_iterator"):
            if not callable(getattr(self, field)):
                raise ExperimentError(f"{where}.{field}: expected a callable, got "
                                      f"{getattr(self, field)!r}")
        for field in ("eval_iterator", "evaluate", "policy_sink", "eval_loss_fn",
                      "export_params", "before_init", "after_init"):
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise ExperimentError(f"{where}.{field}: expected a callable or None, got "
                                      f"{value!r}")
        if self.flops_per_batch is not None and self.flops_per_batch < 0:
            raise ExperimentError(f"{where}.flops_per_batch: expected >= 0 or None, got "
                                  f"{self.flops_per_batch}")
        if self.tokens_per_batch is not None and self.tokens_per_batch < 0:
            raise ExperimentError(f"{where}.tokens_per_batch: expected >= 0 or None, got "
                                  f"{self.tokens_per_batch}")
        if not (isinstance(self.frozen, tuple) and all(isinstance(k, str) for k in self.frozen)):
            raise ExperimentError(f"{where}.frozen: expected a tuple of top-level param names, "
                                  f"got {self.frozen!r}")
        if not isinstance(self.assets, Mapping):
            raise ExperimentError(f"{where}.assets: expected a mapping of asset name -> source "
                                  f"file, got {type(self.assets).__name__}")
        for name, source in self.assets.items():
            if (not isinstance(name, str) or not name or name in (".", "..")
                    or os.sep in name or (os.altsep and os.altsep in name)):
                raise ExperimentError(f"{where}.assets: expected file names without a "
                                      f"directory (e.g. 'tokenizer.model'), got {name!r}")
            if not isinstance(source, str) or not source:
                raise ExperimentError(f"{where}.assets[{name!r}]: expected a source file "
                                      f"path, got {source!r}")
        object.__setattr__(self, "assets", types.MappingProxyType(dict(self.assets)))


def split_params(params: dict, frozen: tuple[str, ...]) -> tuple[dict, dict]:
    """(trainable, frozen) top-level subtrees of the params dict."""
    if frozen and not isinstance(params, dict):
        raise ExperimentError(f"init_fn: expected a dict of params when frozen={frozen}, got "
                              f"{type(params).__name__}")
    missing = [k for k in frozen if k not in params]
    if missing:
        raise ExperimentError(f"Experiment.frozen: keys {missing} are not in the params; "
                              f"top-level keys are {sorted(params)}")
    if not frozen:
        return params, {}
    return ({k: v for k, v in params.items() if k not in frozen},
            {k: v for k, v in params.items() if k in frozen})


def merge_params(trainable: Any, frozen: dict) -> Any:
    return {**trainable, **frozen} if frozen else trainable


def import_experiment_module(name: str):
    """`asr` -> experiments.asr; a dotted or other importable name is imported as given."""
    candidates = [name] if "." in name else [f"experiments.{name}", name]
    for module_name in candidates:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # Only "this module does not exist" moves on; a broken import inside it surfaces.
            if e.name is None or not module_name.startswith(e.name):
                raise
    tried = " or ".join(repr(c) for c in candidates)
    raise ExperimentError(f"--experiment: no module {tried}; expected a file "
                          f"experiments/{name}.py defining build(config)")


def load_experiment(name: str, config: Config) -> Experiment:
    module = import_experiment_module(name)
    build = getattr(module, "build", None)
    if not callable(build):
        raise ExperimentError(f"--experiment {name}: module {module.__name__} has no "
                              "build(config) -> Experiment")
    experiment = build(config)
    if not isinstance(experiment, Experiment):
        raise ExperimentError(f"--experiment {name}: {module.__name__}.build returned "
                              f"{type(experiment).__name__}, expected chorus.training."
                              "experiment.Experiment")
    return experiment
