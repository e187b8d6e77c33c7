"""Shardings for the train state and batch, and the jitted sharded train step."""

from __future__ import annotations

import jax
import numpy as np
import optax

from chorus import sharding
from chorus.config import Config
from chorus.model.factory import abstract_params, example_batch, param_logical_specs
from chorus.model.unified import UnifiedAudioLM
from chorus.training.step import TrainState, make_train_step


def state_shardings(model: UnifiedAudioLM, config: Config, mesh, tx: optax.GradientTransformation):
    """(abstract TrainState with shardings attached, TrainState of shardings)."""
    param_shardings = sharding.logical_to_sharding(param_logical_specs(model, config), mesh)
    params = abstract_params(model, config)
    state = jax.eval_shape(lambda p: TrainState.create(p, tx), params)
    rep = sharding.replicated(mesh)
    # Optimizer moments follow their parameter's sharding; counters are replicated.
    opt_shardings = optax.tree_map_params(tx, lambda _, s: s, state.opt_state, param_shardings,
                                          transform_non_params=lambda _: rep)
    shardings = TrainState(step=rep, params=param_shardings, opt_state=opt_shardings,
                           nonfinite_in_a_row=rep, nonfinite_total=rep)
    with_sharding = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)
    return with_sharding, shardings


def batch_specs(config: Config, mesh, batch_size: int | None = None):
    """Abstract global batch (train config shapes) with data-parallel shardings."""
    t = config.train
    batch = example_batch(config, batch_size or t.batch_size, t.seq_len,
                          num_clips=t.max_audio_clips, mel_frames=t.max_mel_frames)
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                    sharding=sharding.batch_sharding(mesh, np.ndim(v)))
            for k, v in batch.items()}


def jit_train_step(loss_fn, tx, state_shards, mesh, batch_example):
    """The train step jitted with explicit in/out shardings and a donated state."""
    step = make_train_step(loss_fn, tx)
    batch_shards = sharding.batch_shardings(mesh, batch_example)
    return jax.jit(step, in_shardings=(state_shards, batch_shards, sharding.replicated(mesh)),
                   out_shardings=(state_shards, sharding.replicated(mesh)),
                   donate_argnums=(0,))
