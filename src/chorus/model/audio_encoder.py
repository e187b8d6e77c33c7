"""Audio path: 128-bin log-mel (100 Hz) -> conv /4 (25 Hz) -> transformer -> adaptor /2 (12.5 Hz).

Every stage masks padded frames, so a clip's output does not depend on how much padding the
batch gave it. Frame counts follow chorus.vocab (`num_encoder_frames`,
`num_audio_placeholders`), which the data pipelines use to size `<audio>` placeholders.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from chorus.config import AudioEncoderConfig
from chorus.model.layers import Attention, Mlp, dense_init, dtype_of
from chorus.vocab import ADAPTOR_STRIDE, ENCODER_STRIDE


def _sinusoids(length: int, dim: int) -> np.ndarray:
    pos = np.arange(length)[:, None]
    inv = np.exp(-np.log(10_000.0) * np.arange(0, dim, 2) / dim)[None, :]
    return np.concatenate([np.sin(pos * inv), np.cos(pos * inv)], axis=-1).astype(np.float32)


def downsample_mask(mask, stride: int):
    """A frame after a stride-`stride` conv is valid iff the first input frame it covers is."""
    return mask[:, ::stride]


class _Conv(nn.Module):
    features: int
    stride: int
    names: tuple[str, str, str]
    causal: bool = False  # streaming: output i sees inputs <= stride * i only
    dtype: object = jnp.float32
    param_dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, mask):
        x = x * mask[..., None].astype(x.dtype)  # padded frames must not leak into valid ones
        padding = ((2, 0),) if self.causal else "SAME"
        y = nn.Conv(self.features, kernel_size=(3,), strides=(self.stride,), padding=padding,
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.lecun_normal(), self.names),
                    dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return y, downsample_mask(mask, self.stride)


class EncoderBlock(nn.Module):
    config: AudioEncoderConfig
    attention_impl: str = "auto"
    dtype: object = jnp.float32
    param_dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, mask):
        cfg = self.config
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="attn_norm")(x)
        positions = jnp.zeros(mask.shape, jnp.int32)  # absolute sinusoids already added
        segment_ids = mask.astype(jnp.int32)  # valid frames see valid frames only
        a, _ = Attention(num_heads=cfg.num_heads, num_kv_heads=cfg.num_heads,
                         head_dim=cfg.d_model // cfg.num_heads, causal=False, rope_theta=None,
                         chunk_size=cfg.chunk_size or None, attention_impl=self.attention_impl,
                         dtype=self.dtype, param_dtype=self.param_dtype, name="attn")(
            h, positions, segment_ids)
        x = x + a
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="mlp_norm")(x)
        return x + Mlp(cfg.mlp_dim, self.dtype, self.param_dtype, name="mlp")(h)


class AudioEncoder(nn.Module):
    """[N, T, n_mels] log-mel + [N, T] mask -> [N, T/8, out_dim] adaptor frames + mask."""

    config: AudioEncoderConfig
    out_dim: int
    dtype_name: str = "float32"
    param_dtype_name: str = "float32"
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, mel, mask):
        cfg = self.config
        dtype, pdtype = dtype_of(self.dtype_name), dtype_of(self.param_dtype_name)
        if mel.shape[-1] != cfg.n_mels:
            raise ValueError(f"audio_features: expected {cfg.n_mels} mel bins (audio.n_mels), "
                             f"got shape {mel.shape}")
        if mel.shape[1] % (ENCODER_STRIDE * ADAPTOR_STRIDE):
            raise ValueError(f"audio_features: expected a frame count divisible by "
                             f"{ENCODER_STRIDE * ADAPTOR_STRIDE}, got shape {mel.shape}")
        x = ((mel - cfg.mel_mean) / cfg.mel_std).astype(dtype)
        conv_names = ("conv_width", "conv_in", "embed")
        causal = cfg.chunk_size > 0
        x, mask = _Conv(cfg.d_model, 2, conv_names, causal, dtype, pdtype, name="conv1")(x, mask)
        x = nn.gelu(x)
        x, mask = _Conv(cfg.d_model, 2, conv_names, causal, dtype, pdtype, name="conv2")(x, mask)
        x = nn.gelu(x)
        if x.shape[1] > cfg.max_frames:
            raise ValueError(f"audio_features: {x.shape[1]} encoder frames exceed "
                             f"audio.max_frames={cfg.max_frames}")
        x = x + jnp.asarray(_sinusoids(cfg.max_frames, cfg.d_model)[: x.shape[1]], dtype)
        for i in range(cfg.num_layers):
            x = EncoderBlock(cfg, self.attention_impl, dtype, pdtype, name=f"block_{i}")(x, mask)
        x = nn.LayerNorm(dtype=dtype, param_dtype=pdtype, name="final_norm")(x)
        # Adaptor: stride-2 conv to 12.5 Hz, then project into the decoder's width.
        x, mask = _Conv(cfg.adaptor_dim, ADAPTOR_STRIDE, conv_names, causal, dtype, pdtype,
                        name="adaptor_conv")(x, mask)
        x = nn.gelu(x)
        x = nn.Dense(self.out_dim, kernel_init=dense_init(("mlp", "embed")), dtype=dtype,
                     param_dtype=pdtype, name="adaptor_proj")(x)
        return x * mask[..., None].astype(x.dtype), mask
