"""Building and initializing the backbone, optionally directly sharded over a mesh."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
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


def backbone_init(model: UnifiedAudioLM, config: Config) -> Callable[[jax.Array], Any]:
    """rng -> the backbone's boxed params (logical axis names on the leaves; the trainer, or
    `init_params` under a mesh, shards them). The one initializer of every mode's backbone."""
    b = example_batch(config, 1, 8)

    def init(rng):
        return model.init(rng, b["tokens"], b["positions"], b["segment_ids"],
                          b["audio_features"], b["audio_mask"])["params"]

    return init


def _abstract_boxed(model: UnifiedAudioLM, config: Config):
    # The key is made inside the trace: no concrete array, so this is safe under a TPU mesh.
    return jax.eval_shape(lambda: backbone_init(model, config)(jax.random.key(0)))


def param_logical_specs(model: UnifiedAudioLM, config: Config):
    """Logical PartitionSpecs of every parameter (from an abstract init: no memory used)."""
    return nn.get_partition_spec(_abstract_boxed(model, config))


def abstract_params(model: UnifiedAudioLM, config: Config):
    """Parameter shapes/dtypes without allocating anything."""
    boxed = _abstract_boxed(model, config)
    is_box = lambda x: isinstance(x, nn.Partitioned)
    # Strip boxes without applying constraints (we are outside any trace here).
    return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, boxed,
                        is_leaf=is_box)


def init_params(config: Config, rng, mesh=None):
    """Returns (model, params, param_shardings). With a mesh, params are born sharded."""
    model = UnifiedAudioLM(config)
    init = backbone_init(model, config)

    def unboxed(rng):
        return nn.meta.unbox(init(rng))

    if mesh is None:
        return model, jax.jit(unboxed)(rng), None
    shardings = sharding.logical_to_sharding(param_logical_specs(model, config), mesh)
    with sharding.activate(mesh):
        params = jax.jit(unboxed, out_shardings=shardings)(rng)
    return model, params, shardings
