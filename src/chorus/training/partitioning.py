"""Shardings for the train state and batch, and the jitted sharded train / eval steps.

Parameter shardings come from the logical axis names on the boxed params
(`nn.get_partition_spec` -> `chorus.sharding.logical_to_sharding`); optimizer moments follow
their parameter; counters are replicated; batches split their leading axis over (data, fsdp).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from chorus import sharding
from chorus.config import Config
from chorus.model.factory import abstract_params, example_batch, param_logical_specs
from chorus.model.unified import UnifiedAudioLM
from chorus.training.step import TrainState, make_eval_step, make_train_step


def unbox(tree: Any) -> Any:
    """Strips flax partitioning boxes (no constraints applied: safe outside a trace)."""
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
    return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                        is_leaf=is_box)


def boxed_shardings(abstract_boxed: Any, mesh) -> Any:
    """NamedShardings (unboxed tree structure) from the logical names on boxed leaves."""
    return sharding.logical_to_sharding(nn.get_partition_spec(abstract_boxed), mesh)


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
    with_sharding = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)
    return with_sharding, shardings


def state_shardings(model: UnifiedAudioLM, config: Config, mesh, tx: optax.GradientTransformation):
    """The backbone's TrainState shardings (used by `chorus compile`)."""
    param_shardings = sharding.logical_to_sharding(param_logical_specs(model, config), mesh)
    return train_state_shardings(abstract_params(model, config), param_shardings, tx, mesh)


def data_parallel_size(mesh) -> int:
    return math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)


def check_batch_size(batch_size: int, mesh, num_processes: int = 1) -> None:
    dp = data_parallel_size(mesh)
    if batch_size % dp:
        raise ValueError(f"train.batch_size: expected a multiple of the data-parallel size "
                         f"(mesh data x fsdp = {dp}), got {batch_size}")
    if batch_size % num_processes:
        raise ValueError(f"train.batch_size: expected a multiple of the process count "
                         f"{num_processes} (each host feeds an equal share), got {batch_size}")


def batch_specs(config: Config, mesh, batch_size: int | None = None):
    """Abstract global batch (train config shapes) with data-parallel shardings."""
    t = config.train
    batch = example_batch(config, batch_size or t.batch_size, t.seq_len,
                          num_clips=t.max_audio_clips, mel_frames=t.max_mel_frames)
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                    sharding=sharding.batch_sharding(mesh, np.ndim(v)))
            for k, v in batch.items()}


def jit_train_step(loss_fn, tx, state_shards, mesh, batch_example) -> Callable:
    """The train step jitted with explicit in/out shardings and a donated state."""
    step = make_train_step(loss_fn, tx)
    batch_shards = sharding.batch_shardings(mesh, batch_example)
    return jax.jit(step, in_shardings=(state_shards, batch_shards, sharding.replicated(mesh)),
                   out_shardings=(state_shards, sharding.replicated(mesh)),
                   donate_argnums=(0,))


def jit_eval_step(loss_fn, state_shards, mesh, batch_example) -> Callable:
    step = make_eval_step(loss_fn)
    batch_shards = sharding.batch_shardings(mesh, batch_example)
    return jax.jit(step, in_shardings=(state_shards, batch_shards, sharding.replicated(mesh)),
                   out_shardings=sharding.replicated(mesh))
