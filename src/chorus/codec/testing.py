"""Small fixtures for tests and for callers that need a codec without training one.

`tiny_config()` is a cpu-tiny variant with one or two blocks per network (fast to compile);
`random_codec()` is a Codec with random (non-trivial) parameters: it produces waveforms of
the right length and rate, not speech.
"""

from __future__ import annotations

import jax
import numpy as np

from chorus.codec.config import CodecConfig, apply_overrides, get_preset
from chorus.codec.features import MelStats
from chorus.codec.models import STAGES, CodecModels, init_params
from chorus.codec.pipeline import Codec

TINY_OVERRIDES = (
    "tokenizer.dim=32", "tokenizer.encoder_blocks=1", "tokenizer.decoder_blocks=1",
    "flow.dim=32", "flow.cond_blocks=1", "flow.dilations=[1,2]", "flow.sample_steps=3",
    "vocoder.dim=32", "vocoder.blocks=2", "vocoder.kernel_size=5", "vocoder.segment_frames=24",
    "speaker.dim=32", "speaker.blocks=1", "speaker.embed_dim=16",
    "corpus.voices=['en-gb+m1','en-gb+f2']", "corpus.heldout_voices=['en-gb+m3']",
    "corpus.train_utterances_per_voice=3", "corpus.eval_sentences=2",
    "streaming.chunk_codes=8", "streaming.vocoder_context_frames=8",
    "streaming.vocoder_lookahead_frames=10", "streaming.crossfade_samples=80",
)


def tiny_config(*overrides: str) -> CodecConfig:
    return apply_overrides(get_preset("cpu-tiny"), [*TINY_OVERRIDES, *overrides])


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
    for name in STAGES:
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
    n = cfg.mel.n_mels
    stats = MelStats(np.full((n,), -4.0, np.float32), np.full((n,), 2.0, np.float32))
    voice = np.random.default_rng(seed).standard_normal(cfg.speaker.embed_dim)
    voices = {"voice0": (voice / np.linalg.norm(voice)).astype(np.float32)}
    return Codec(cfg, random_params(cfg, seed), stats, voices)
