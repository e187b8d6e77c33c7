"""The decoder stack: pre-norm GQA + SwiGLU blocks, scanned over layers, with remat."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from chorus.config import ModelConfig
from chorus.model.layers import Attention, Mlp, RMSNorm, dtype_of

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class DecoderBlock(nn.Module):
    config: ModelConfig
    prefill: bool = False

    @nn.compact
    def __call__(self, x, cache, positions, segment_ids, cache_lengths):
        cfg = self.config
        dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="attn_norm")(x)
        a, new_cache = Attention(
            num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
            causal=True, rope_theta=cfg.rope_theta, sliding_window=cfg.sliding_window,
            logit_soft_cap=cfg.logit_soft_cap, attention_impl=cfg.attention_impl,
            block_q=cfg.attention_block_q, block_kv=cfg.attention_block_kv,
            prefill=self.prefill, dtype=dtype, param_dtype=pdtype, name="attn",
        )(h, positions, segment_ids, cache, cache_lengths)
        x = x + a
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="mlp_norm")(x)
        x = x + Mlp(cfg.mlp_dim, dtype, pdtype, name="mlp")(h)
        x = nn.with_logical_constraint(x, ("activation_batch", "activation_length",
                                           "activation_embed"))
        return x, new_cache


class Decoder(nn.Module):
    """Runs the blocks over input embeddings; returns final-normed hidden states and the cache.

    `cache` (optional) is {"k", "v"} of shape [layers, B, T, kv_heads, head_dim].
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x, positions, segment_ids=None, cache=None, cache_lengths=None,
                 prefill=False):
        cfg = self.config
        block = DecoderBlock
        if cfg.remat_policy != "none":
            block = nn.remat(block, policy=REMAT_POLICIES[cfg.remat_policy],
                             prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            stack = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, prefill, name="layers")
            x, new_cache = stack(x, cache, positions, segment_ids, cache_lengths)
        else:
            layer_caches = []
            for i in range(cfg.num_layers):
                layer_cache = None if cache is None else jax.tree.map(lambda c, i=i: c[i], cache)
                x, c = block(cfg, prefill, name=f"layers_{i}")(x, layer_cache, positions,
                                                                segment_ids, cache_lengths)
                layer_caches.append(c)
            new_cache = None if cache is None else jax.tree.map(lambda *c: jnp.stack(c),
                                                                *layer_caches)
        x = RMSNorm(cfg.norm_eps, dtype_of(cfg.dtype), dtype_of(cfg.param_dtype),
                    name="final_norm")(x)
        return x, new_cache
