"""Codec fixtures for tests: tiny network settings and a codec with random parameters.

`TINY_OVERRIDES` are `--set experiment.*` values with one or two blocks per network (fast to
compile); `tiny_config()` is the CodecConfig they make. `random_codec()` is a Codec with
random (non-trivial) parameters: it produces waveforms of the right length and rate, not
speech.
"""

from __future__ import annotations

import jax
import numpy as np

from chorus.codec.config import CodecConfig
from chorus.codec.models import NETWORKS, CodecModels, init_params
from chorus.codec.pipeline import Codec
from chorus.config import load_config

TINY_OVERRIDES = (
    "experiment.tokenizer.dim=32", "experiment.tokenizer.encoder_blocks=1",
    "experiment.tokenizer.decoder_blocks=1",
    "experiment.flow.dim=32", "experiment.flow.cond_blocks=1", "experiment.flow.dilations=[1,2]",
    "experiment.flow.sample_steps=3",
    "experiment.vocoder.dim=32", "experiment.vocoder.blocks=2", "experiment.vocoder.kernel_size=5",
    "experiment.vocoder.segment_frames=24",
    "experiment.speaker.dim=32", "experiment.speaker.blocks=1", "experiment.speaker.embed_dim=16",
    "experiment.streaming.chunk_codes=8", "experiment.streaming.vocoder_context_frames=8",
    "experiment.streaming.vocoder_lookahead_frames=10",
    "experiment.streaming.crossfade_samples=80",
)


def experiment_mapping(*overrides: str) -> dict:
    """`config.experiment` of a run with TINY_OVERRIDES + these `experiment.a.b=v` overrides."""
    return dict(load_config("cpu-tiny", (*TINY_OVERRIDES, *overrides)).experiment)


def tiny_config(*overrides: str) -> CodecConfig:
    """overrides: further `experiment.<section>.<field>=value` strings."""
    return CodecConfig.from_experiment(experiment_mapping(*overrides))


def random_params(cfg: CodecConfig, seed: int = 0) -> dict:
    """Random params of every network, drawn with numpy on the shapes of the real init.

    Why numpy: initializing through flax compiles every random op per parameter shape, which
    costs seconds on CPU; tests only need non-trivial values of the right structure. Matrices
    get N(0, 1/fan_in), LayerNorm scales 1 + N(0, 0.1^2), everything else N(0, 0.1^2), so
    zero-initialized heads are not inert.
    """
    models = CodecModels.build(cfg)
    rng = np.random.default_rng(seed)
    params = {}
    for name in NETWORKS:
        shapes = jax.eval_shape(lambda k, n=name: init_params(models, cfg, n, k),
                                jax.random.PRNGKey(0))

        def draw(path, leaf):
            shape = leaf.shape
            if len(shape) >= 2:
                return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(
                    np.float32)
            base = 1.0 if getattr(path[-1], "key", None) == "scale" else 0.0
            return (base + 0.1 * rng.standard_normal(shape)).astype(np.float32)

        params[name] = jax.tree_util.tree_map_with_path(draw, shapes)
    return params


def random_codec(cfg: CodecConfig | None = None, seed: int = 0) -> Codec:
    cfg = cfg or tiny_config()
    voice = np.random.default_rng(seed).standard_normal(cfg.speaker.embed_dim)
    voices = {"voice0": (voice / np.linalg.norm(voice)).astype(np.float32)}
    return Codec(cfg, random_params(cfg, seed), voices)
