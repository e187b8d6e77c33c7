"""The train state: what it holds, where its leaves live, and how it is created.

    TrainState       step, trainable params, optimizer state, non-finite counters, frozen
                     params (no gradients, no optimizer state: an RL reference, a teacher)
    ParamSpec        the experiment's params as ShapeDtypeStructs carrying their shardings
                     (what an inference restore needs: no optimizer)
    StateSpec        ParamSpec + the optimizer, the abstract TrainState and the run's keys
                     (what the trainer needs)
    init_state       the fresh TrainState (the Trainer's start)
    init_params      the same fresh params without an optimizer (trainable and frozen
                     merged), e.g. to evaluate the starting point

Shardings come from the params: `init_fn` is `eval_shape`d, the logical axis names on its
flax-boxed leaves (`nn.get_partition_spec`) are mapped by chorus.sharding's rules, and
optimizer moments follow their parameter. Params are then initialized directly into those
shardings, never whole on one device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from chorus import sharding
from chorus.config import Config
from chorus.sharding import boxed_shardings, unbox  # noqa: F401  (also importable from here)
from chorus.training import init_feed
from chorus.training.experiment import Experiment, merge_params, split_params
from chorus.training.optimizer import make_optimizer


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any  # trainable: gradients + optimizer state
    opt_state: Any
    nonfinite_in_a_row: jax.Array
    nonfinite_total: jax.Array
    frozen: Any = flax.struct.field(default_factory=dict)  # no gradients (e.g. RL reference)

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation, frozen=None) -> TrainState:
        zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the state is donated
        return cls(step=zero(), params=params, opt_state=tx.init(params),
                   nonfinite_in_a_row=zero(), nonfinite_total=zero(),
                   frozen={} if frozen is None else frozen)


def with_shardings(abstract: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def train_state_shardings(abstract_params: Any, param_shardings: Any,
                          tx: optax.GradientTransformation, mesh, abstract_frozen: Any = None,
                          frozen_shardings: Any = None):
    """(abstract TrainState with shardings attached, TrainState of shardings)."""
    abstract_frozen = {} if abstract_frozen is None else abstract_frozen
    frozen_shardings = {} if frozen_shardings is None else frozen_shardings
    state = jax.eval_shape(lambda p, f: TrainState.create(p, tx, f), abstract_params,
                           abstract_frozen)
    rep = sharding.replicated(mesh)
    opt_shardings = optax.tree_map_params(tx, lambda _, s: s, state.opt_state, param_shardings,
                                          transform_non_params=lambda _: rep)
    shardings = TrainState(step=rep, params=param_shardings, opt_state=opt_shardings,
                           nonfinite_in_a_row=rep, nonfinite_total=rep, frozen=frozen_shardings)
    return with_shardings(state, shardings), shardings


def run_keys(config: Config) -> tuple[jax.Array, jax.Array]:
    """(init key, base key) of a run: steps draw fold_in(base key, step)."""
    init_key, base_key = jax.random.split(jax.random.key(config.train.seed))
    return init_key, base_key


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """The params of (experiment, mesh), split into trainable and frozen top-level keys."""

    params: Any  # trainable, ShapeDtypeStructs with shardings
    frozen: Any  # dict (empty without frozen keys), same
    param_shardings: Any
    frozen_shardings: Any


def make_param_spec(config: Config, experiment: Experiment, mesh) -> ParamSpec:
    init_key, _ = run_keys(config)
    boxed = jax.eval_shape(experiment.init_fn, init_key)
    shards = boxed_shardings(boxed, mesh)
    trainable, frozen = split_params(unbox(boxed), experiment.frozen)
    trainable_shards, frozen_shards = split_params(shards, experiment.frozen)
    return ParamSpec(with_shardings(trainable, trainable_shards),
                     with_shardings(frozen, frozen_shards), trainable_shards, frozen_shards)


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """Everything about the train state that follows from (config, experiment, mesh)."""

    abstract: Any  # TrainState of ShapeDtypeStructs carrying shardings
    shardings: Any  # TrainState of NamedShardings
    tx: Any
    init_key: jax.Array
    base_key: jax.Array  # the run's RNG; steps use fold_in(base_key, step)


def make_state_spec(config: Config, experiment: Experiment, mesh) -> StateSpec:
    params = make_param_spec(config, experiment, mesh)
    tx = make_optimizer(config.optim, config.train.steps)
    abstract, shardings = train_state_shardings(params.params, params.param_shardings, tx,
                                                mesh, params.frozen, params.frozen_shardings)
    init_key, base_key = run_keys(config)
    return StateSpec(abstract, shardings, tx, init_key, base_key)


def _init_into(experiment: Experiment, key: jax.Array, shardings: Any, mesh,
               finish: Callable[[Any], Any] = lambda params: params) -> Any:
    """finish(the unboxed fresh params), computed directly into `shardings` (never whole on
    one device). Params from another run (init_from.pretrained in init_fn) are the program's
    second argument, already placed in their shardings."""

    def program(k, pretrained_values):
        with init_feed.feeding(requests, pretrained_values):
            return finish(unbox(experiment.init_fn(k)))

    with sharding.activate(mesh):
        requests, values = init_feed.pretrained_args(experiment.init_fn, key, mesh)
        return jax.jit(program, out_shardings=shardings)(key, values)


def init_params(config: Config, experiment: Experiment, mesh) -> Any:
    """The run's fresh params (trainable and frozen merged; the run's init key), initialized
    into the trainer's shardings on `mesh`: what the Trainer starts from, without an
    optimizer. Reads another run only as init_fn does (after `experiment.before_init`)."""
    spec = make_param_spec(config, experiment, mesh)
    return _init_into(experiment, run_keys(config)[0],
                      merge_params(spec.param_shardings, spec.frozen_shardings), mesh)


def init_state(spec: StateSpec, experiment: Experiment, mesh) -> TrainState:
    """The fresh TrainState: params (and optimizer state) initialized directly into their
    shardings, in one program."""

    def create(params):
        trainable, frozen = split_params(params, experiment.frozen)
        return TrainState.create(trainable, spec.tx, frozen)

    return _init_into(experiment, spec.init_key, spec.shardings, mesh, create)
