"""Building and initializing the backbone, optionally directly sharded over a mesh."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chorus import sharding
from chorus.config import Config
from chorus.model.unified import UnifiedAudioLM
from chorus.vocab import MEL_FRAMES_PER_PLACEHOLDER

BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions", "audio_features",
              "audio_mask")


def example_batch(config: Config, batch_size: int, seq_len: int, num_clips: int = 1,
                  mel_frames: int = 8 * MEL_FRAMES_PER_PLACEHOLDER) -> dict[str, np.ndarray]:
    """A zero batch in the batch format of docs/design.md, for shapes, init and AOT compilation."""
    return {
        "tokens": np.zeros((batch_size, seq_len), np.int32),
        "targets": np.zeros((batch_size, seq_len), np.int32),
        "loss_mask": np.zeros((batch_size, seq_len), np.float32),
        "segment_ids": np.ones((batch_size, seq_len), np.int32),
        "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32),
                                     (batch_size, seq_len)).copy(),
        "audio_features": np.zeros((batch_size, num_clips, mel_frames, config.audio.n_mels),
                                   np.float32),
        "audio_mask": np.ones((batch_size, num_clips, mel_frames), bool),
    }


def _init_fn(model: UnifiedAudioLM, batch):
    def init(rng):
        return model.init(rng, batch["tokens"], batch["positions"], batch["segment_ids"],
                          batch["audio_features"], batch["audio_mask"])
    return init


def _abstract_boxed(model: UnifiedAudioLM, config: Config):
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
             for k, v in example_batch(config, 1, 8).items()}
    # The key is made inside the trace: no concrete array, so this is safe under a TPU mesh.
    return jax.eval_shape(lambda b: _init_fn(model, b)(jax.random.key(0)), batch)


def param_logical_specs(model: UnifiedAudioLM, config: Config):
    """Logical PartitionSpecs of every parameter (from an abstract init: no memory used)."""
    return nn.get_partition_spec(_abstract_boxed(model, config))["params"]


def abstract_params(model: UnifiedAudioLM, config: Config):
    """Parameter shapes/dtypes without allocating anything."""
    boxed = _abstract_boxed(model, config)["params"]
    is_box = lambda x: isinstance(x, nn.Partitioned)
    # Strip boxes without applying constraints (we are outside any trace here).
    return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, boxed,
                        is_leaf=is_box)


def init_params(config: Config, rng, mesh=None):
    """Returns (model, params, param_shardings). With a mesh, params are born sharded."""
    model = UnifiedAudioLM(config)
    batch = jax.tree.map(jnp.asarray, example_batch(config, 1, 8))
    init = _init_fn(model, batch)

    def unboxed(rng):
        return nn.meta.unbox(init(rng))["params"]

    if mesh is None:
        return model, jax.jit(unboxed)(rng), None
    shardings = sharding.logical_to_sharding(param_logical_specs(model, config), mesh)
    with sharding.activate(mesh):
        params = jax.jit(unboxed, out_shardings=shardings)(rng)
    return model, params, shardings
