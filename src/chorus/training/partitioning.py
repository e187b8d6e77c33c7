"""The jitted, sharded train step and the shapes `chorus compile` lowers.

Parameter shardings come from the logical axis names on the boxed params (state.py); batches
split their leading axis over (data, fsdp); metrics come back replicated.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import optax

from chorus import sharding
from chorus.config import Config
from chorus.model.factory import abstract_params, example_batch, param_logical_specs
from chorus.model.unified import UnifiedAudioLM
from chorus.training.state import train_state_shardings
from chorus.training.step import make_train_step


def state_shardings(model: UnifiedAudioLM, config: Config, mesh, tx: optax.GradientTransformation):
    """The backbone's TrainState shardings (used by `chorus compile`)."""
    param_shardings = sharding.logical_to_sharding(param_logical_specs(model, config), mesh)
    return train_state_shardings(abstract_params(model, config), param_shardings, tx, mesh)


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
