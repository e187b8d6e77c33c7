"""Multi-token prediction (MTP) heads and their loss.

The backbone's own head is depth 0: at index i it predicts token i+1. MTP depth j = 1..k at
index i predicts token i+j+1. Two designs, chosen by `MTPConfig.design`:

  * "sequential" (DeepSeek-V3): depth j combines RMSNorm(h^{j-1}_i) with RMSNorm(Emb(t_{i+j}))
    (concat -> projection), runs one causal transformer block (the backbone's DecoderBlock) and
    a final RMSNorm; h^0 is the backbone's hidden state. The depths are one scanned
    definition (params stacked on a leading "layers" axis; `depth_params`, `apply_depth`
    run one alone). The chain is causal per depth, so a depth's block can keep a KV cache at
    decode time (see chorus.decoding.drafters).
  * "parallel" (Medusa): head j maps the backbone's last hidden state with one residual SiLU
    block, h_i + SiLU(W_j h_i + b_j); W_j, b_j start at zero so every head starts as a copy of
    the backbone's next-token head.

Both share the backbone's output head (`UnifiedAudioLM.logits`); the sequential design also
shares its token embedding (`UnifiedAudioLM.embed_tokens`; audio placeholders keep their plain
embedding - the hidden stream already carries the audio). MTP parameters live in their own
tree, so they can be trained jointly with the backbone or on a frozen one.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from chorus import sharding
from chorus.config import Config, ConfigError, ModelConfig
from chorus.model.decoder import DecoderBlock
from chorus.model.layers import Projection, RMSNorm, dtype_of
from chorus.model.losses import cross_entropy, token_accuracy
from chorus.model.unified import UnifiedAudioLM

DESIGNS = ("sequential", "parallel")


@dataclasses.dataclass(frozen=True)
class MTPConfig:
    """MTP design, number of depths k, loss weight lambda (loss = lambda/k * sum_j CE_j), and
    what the heads learn to predict: "data" (the next tokens of the batch) or "backbone"
    (self-distillation: the backbone's own greedy token at each of those positions, which is
    what verified decoding accepts; for a heads stage on a frozen backbone)."""

    design: str = "sequential"
    num_heads: int = 2
    loss_weight: float = 0.3
    targets: str = "data"

    def __post_init__(self):
        if self.design not in DESIGNS:
            raise ConfigError(f"mtp.design: expected one of {list(DESIGNS)}, got {self.design!r}")
        if (not isinstance(self.num_heads, int) or isinstance(self.num_heads, bool)
                or not 1 <= self.num_heads <= 15):
            raise ConfigError(f"mtp.num_heads: expected an int in 1..15 (the verify window is "
                              f"at most 16), got {self.num_heads!r}")
        if not isinstance(self.loss_weight, int | float) or self.loss_weight < 0:
            raise ConfigError(f"mtp.loss_weight: expected a number >= 0, got "
                              f"{self.loss_weight!r}")
        if self.targets not in ("data", "backbone"):
            raise ConfigError(f"mtp.targets: expected 'data' or 'backbone', got "
                              f"{self.targets!r}")


# ----------------------------------------------------------------------------- modules


class SequentialDepth(nn.Module):
    """One DeepSeek-V3 MTP module. Returns (block output, head-normed output, new cache)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, prev_hidden, token_embeds, positions, segment_ids=None, cache=None,
                 cache_lengths=None, prefill=False):
        cfg = self.config
        dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="hidden_norm")(prev_hidden)
        e = RMSNorm(cfg.norm_eps, dtype, pdtype, name="embed_norm")(token_embeds)
        # [2d] -> d: the wide input axis shards like an MLP hidden axis.
        x = Projection((cfg.d_model,), ("mlp", "embed"), dtype=dtype, param_dtype=pdtype,
                       name="combine")(jnp.concatenate([h, e], axis=-1))
        x = nn.with_logical_constraint(x, ("activation_batch", "activation_length",
                                           "activation_embed"))
        x, new_cache = DecoderBlock(cfg, prefill, name="block")(x, cache, positions,
                                                                segment_ids, cache_lengths)
        normed = RMSNorm(cfg.norm_eps, dtype, pdtype, name="head_norm")(x)
        return x, normed, new_cache


class _ChainStep(nn.Module):
    """One depth as a scan step: carry = the previous depth's output."""

    config: ModelConfig

    @nn.compact
    def __call__(self, prev_hidden, token_embeds, positions, segment_ids):
        out, normed, _ = SequentialDepth(self.config, name="depth")(prev_hidden, token_embeds,
                                                                    positions, segment_ids)
        return out, normed


class SequentialMTP(nn.Module):
    """k depths scanned over one definition: params are stacked on a leading "layers" axis
    (like the backbone's scanned layers), so compile time does not grow with k."""

    config: ModelConfig
    num_heads: int

    @nn.compact
    def __call__(self, hidden, token_embeds, positions, segment_ids=None):
        """Teacher-forced chain. token_embeds [k, B, L, d]: depth j's row i embeds t_{i+j}.

        Returns head-normed hidden states [k, B, L, d] (depth j at index i -> token i+j+1).
        """
        chain = nn.scan(_ChainStep, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=(0, nn.broadcast, nn.broadcast), length=self.num_heads,
                        metadata_params={nn.PARTITION_NAME: "layers"})(self.config,
                                                                       name="depths")
        _, normed = chain(hidden, token_embeds, positions, segment_ids)
        return normed


def stacked_depth_params(head_params):
    """The sequential depths' parameters, stacked on a leading axis of size k."""
    return head_params["depths"]["depth"]


def depth_params(head_params, j):
    """Depth j's parameters (j is 1-based and may be traced)."""
    return jax.tree.map(lambda x: x[j - 1], stacked_depth_params(head_params))


def apply_depth(heads: SequentialMTP, params_j, prev_hidden, token_embeds, positions,
                segment_ids=None, cache=None, cache_lengths=None, prefill=False):
    """Runs one depth alone (training, prefill or a cached decode window) with its params."""
    return SequentialDepth(heads.config).apply({"params": params_j}, prev_hidden, token_embeds,
                                               positions, segment_ids, cache, cache_lengths,
                                               prefill)


class ResidualHead(nn.Module):
    """Medusa head: h + SiLU(W h + b), zero-initialized (starts as the identity)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        d = hidden.shape[-1]
        kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                   ("embed", "mlp")),
                            (d, d), pdtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ("mlp",)), (d,), pdtype)
        z = jnp.dot(hidden.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)
        return hidden + nn.silu(z).astype(hidden.dtype)


class ParallelMTP(nn.Module):
    config: ModelConfig
    num_heads: int

    def setup(self):
        self.heads = [ResidualHead(self.config) for _ in range(self.num_heads)]

    def __call__(self, hidden):
        """hidden [..., d] -> [k, ..., d]; head j at index i -> token i+j+1."""
        return jnp.stack([head(hidden) for head in self.heads])

    def head(self, j, hidden):
        return self.heads[j - 1](hidden)


def build_mtp(model_config: ModelConfig, mtp: MTPConfig) -> nn.Module:
    cls = SequentialMTP if mtp.design == "sequential" else ParallelMTP
    return cls(model_config, mtp.num_heads)


def _init_inputs(heads: nn.Module, config: Config):
    d, length = config.model.d_model, 8
    hidden = jnp.zeros((1, length, d), jnp.float32)
    if isinstance(heads, SequentialMTP):
        embeds = jnp.zeros((heads.num_heads, 1, length, d), jnp.float32)
        positions = jnp.arange(length)[None]
        return (hidden, embeds, positions, jnp.ones((1, length), jnp.int32))
    return (hidden,)


def init_boxed(heads: nn.Module, config: Config, rng):
    """Flax-boxed params (logical axis names on every leaf), for a trainer's init_fn."""
    return heads.init(rng, *_init_inputs(heads, config))["params"]


def mtp_logical_specs(heads: nn.Module, config: Config):
    """Logical PartitionSpecs of the MTP parameters (abstract init, no memory used)."""
    boxed = jax.eval_shape(lambda: init_boxed(heads, config, jax.random.key(0)))
    return nn.get_partition_spec(boxed)


def init_mtp_params(config: Config, mtp: MTPConfig, rng, mesh=None):
    """Returns (heads module, params, param_shardings), like chorus.model.init_params."""
    heads = build_mtp(config.model, mtp)

    def unboxed(rng):
        return nn.meta.unbox(init_boxed(heads, config, rng))

    if mesh is None:
        return heads, jax.jit(unboxed)(rng), None
    shardings = sharding.logical_to_sharding(mtp_logical_specs(heads, config), mesh)
    with sharding.activate(mesh):
        params = jax.jit(unboxed, out_shardings=shardings)(rng)
    return heads, params, shardings


# ----------------------------------------------------------------------------- loss


def _shift_left(x, n: int, fill):
    """x[:, i] <- x[:, i + n]; the last n columns get `fill`."""
    pad = jnp.full(x.shape[:1] + (n,) + x.shape[2:], fill, x.dtype)
    return jnp.concatenate([x[:, n:], pad], axis=1)


def mtp_targets(targets, loss_mask, segment_ids, depth: int):
    """Depth j at index i: input token t_{i+j}, target t_{i+j+1}, and the target's weight.

    With targets[i] = t_{i+1}: input = targets[i+j-1], target = targets[i+j]. The weight is
    loss_mask[i+j] where indices i..i+j lie in one non-padding segment, else 0 - predictions
    never cross a packing boundary.
    """
    same = segment_ids != 0
    for m in range(1, depth + 1):
        same &= _shift_left(segment_ids, m, -1) == segment_ids
    weight = _shift_left(loss_mask, depth, 0) * same
    inputs = _shift_left(targets, depth - 1, 0)
    return inputs, _shift_left(targets, depth, 0), weight.astype(jnp.float32)


def mtp_logits(model: UnifiedAudioLM, params, heads: nn.Module, head_params, hidden, batch):
    """Logits of every depth, [k, B, L, V], from the backbone hidden states [B, L, d]."""
    k = heads.num_heads
    if isinstance(heads, ParallelMTP):
        out = heads.apply({"params": head_params}, hidden)
    else:
        inputs = jnp.stack([mtp_targets(batch["targets"], batch["loss_mask"],
                                        batch["segment_ids"], j)[0] for j in range(1, k + 1)])
        embeds = model.apply({"params": params}, inputs, method=UnifiedAudioLM.embed_tokens)
        out = heads.apply({"params": head_params}, hidden, embeds, batch["positions"],
                          batch["segment_ids"])
    return model.apply({"params": params}, out, method=UnifiedAudioLM.logits)


def mtp_loss(model: UnifiedAudioLM, params, heads: nn.Module, head_params, hidden, batch,
             mtp: MTPConfig, logits=None):
    """lambda/k * sum_j CE_j. Returns (loss, metrics).

    `hidden` is the backbone's hidden [B, L, d]; pass `jax.lax.stop_gradient(hidden)` (and
    differentiate only `head_params`) to train the heads on a frozen backbone. With
    mtp.targets="backbone" the supervised targets are replaced by the backbone's greedy
    tokens (its `logits` [B, L, V], computed from `hidden` when not given; no gradient).
    """
    if mtp.targets == "backbone":
        if logits is None:
            logits = model.apply({"params": params}, hidden, method=UnifiedAudioLM.logits)
        greedy = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1).astype(
            batch["targets"].dtype)
        batch = {**batch, "targets": jnp.where(batch["loss_mask"] > 0, greedy,
                                               batch["targets"])}
    logits = mtp_logits(model, params, heads, head_params, hidden, batch)
    total = 0.0
    metrics = {}
    for j in range(1, heads.num_heads + 1):
        _, target, weight = mtp_targets(batch["targets"], batch["loss_mask"],
                                        batch["segment_ids"], j)
        ce, _ = cross_entropy(logits[j - 1], target, weight)
        total = total + ce
        metrics[f"mtp/ce_{j}"] = ce
        metrics[f"mtp/accuracy_{j}"] = token_accuracy(logits[j - 1], target, weight)
    loss = mtp.loss_weight / heads.num_heads * total
    metrics["mtp/loss"] = loss
    return loss, jax.lax.stop_gradient(metrics)


def make_mtp_loss(model: UnifiedAudioLM, heads: nn.Module, mtp: MTPConfig,
                  train_backbone: bool = True):
    """loss_fn(params, batch, rng) -> (loss, metrics), params = {"backbone": .., "mtp": ..}.

    train_backbone=True: LM cross-entropy + MTP loss, gradients reach everything.
    train_backbone=False: the backbone (its hidden, shared embedding and output head) is a
    constant; the loss is the MTP loss alone and only "mtp" gets gradients.
    """

    def loss_fn(params, batch, rng):
        del rng
        backbone = params["backbone"]
        if not train_backbone:
            backbone = jax.lax.stop_gradient(backbone)
        out = model.apply({"params": backbone}, batch["tokens"], batch["positions"],
                          batch["segment_ids"], batch["audio_features"], batch["audio_mask"])
        ce, count = cross_entropy(out["logits"], batch["targets"], batch["loss_mask"])
        extra, metrics = mtp_loss(model, backbone, heads, params["mtp"], out["hidden"], batch,
                                  mtp, out["logits"])
        loss = ce + extra if train_backbone else extra
        accuracy = token_accuracy(out["logits"], batch["targets"], batch["loss_mask"])
        metrics = {**metrics, "ce": jax.lax.stop_gradient(ce), "tokens": count, "loss": loss,
                   "accuracy": jax.lax.stop_gradient(accuracy),
                   # 0 when the data pipeline sized the <audio> placeholders to the clips
                   "audio_placeholder_excess": abs(out["audio_placeholder_excess"]).sum()}
        return loss, metrics

    return loss_fn
