"""UnifiedAudioLM: one backbone over the unified token stream, knowing no mode.

Inputs follow the batch format of docs/design.md. Audio clips are encoded, and the k-th `<audio>`
placeholder of each row is replaced by that row's k-th valid adaptor frame (clips in order).
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import Config
from chorus.model.audio_encoder import AudioEncoder
from chorus.model.decoder import Decoder
from chorus.model.layers import dtype_of
from chorus.vocab import VocabLayout


@flax.struct.dataclass
class KVCache:
    """Static-shape cache; `lengths` [B] counts valid rows. Rollback = set lengths back."""

    k: jax.Array  # [layers, B, T, kv_heads, head_dim]
    v: jax.Array
    lengths: jax.Array  # [B] int32

    @property
    def capacity(self) -> int:
        return self.k.shape[2]


def init_cache(config: Config, batch_size: int, capacity: int) -> KVCache:
    m = config.model
    shape = (m.num_layers, batch_size, capacity, m.num_kv_heads, m.head_dim)
    dtype = dtype_of(m.dtype)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype),
                   jnp.zeros((batch_size,), jnp.int32))


# The names of `encode_audio(..., with_encoder_frames=True)`'s outputs in a forward's output.
AUDIO_OUTPUTS = ("audio_frames", "audio_frame_mask", "encoder_frames", "encoder_frame_mask")


def splice_audio(embeds, tokens, placeholder_id, frames, frame_mask):
    """Fills placeholder positions with adaptor frames, vectorized over the batch.

    embeds [B, L, d]; tokens [B, L]; frames [B, A, F, d]; frame_mask [B, A, F].
    Returns the merged embeddings and, per row, (#placeholders - #valid frames): 0 when the
    data pipeline sized the placeholders right.
    """
    b, a, f, d = frames.shape
    flat = frames.reshape(b, a * f, d)
    valid = frame_mask.reshape(b, a * f)
    # Stable sort puts each row's valid frames first, in clip order.
    order = jnp.argsort(~valid, axis=1, stable=True)
    compact = jnp.take_along_axis(flat, order[..., None], axis=1)
    is_placeholder = tokens == placeholder_id
    rank = jnp.cumsum(is_placeholder, axis=1) - 1
    picked = jnp.take_along_axis(compact, jnp.clip(rank, 0, a * f - 1)[..., None], axis=1)
    merged = jnp.where(is_placeholder[..., None], picked.astype(embeds.dtype), embeds)
    excess = is_placeholder.sum(axis=1) - valid.sum(axis=1)
    return merged, excess


class UnifiedAudioLM(nn.Module):
    config: Config

    def setup(self):
        m = self.config.model
        self.layout = VocabLayout.from_model_config(m)
        dtype, pdtype = dtype_of(m.dtype), dtype_of(m.param_dtype)
        self.embed = nn.Embed(
            self.layout.size, m.d_model, dtype=dtype, param_dtype=pdtype,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                        ("vocab", "embed")))
        self.audio_encoder = AudioEncoder(self.config.audio, out_dim=m.d_model,
                                          dtype_name=m.dtype, param_dtype_name=m.param_dtype,
                                          attention_impl=m.attention_impl)
        self.decoder = Decoder(m)
        if not m.tie_embeddings:
            self.lm_head = nn.Dense(
                self.layout.size, use_bias=False, dtype=dtype, param_dtype=pdtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                    ("embed", "vocab")))

    # -- pieces (also used by heads that share the embedding / output head) --------------

    def embed_tokens(self, tokens):
        return self.embed(tokens) * jnp.sqrt(self.config.model.d_model).astype(
            dtype_of(self.config.model.dtype))

    def logits(self, hidden):
        m = self.config.model
        if m.tie_embeddings:
            out = self.embed.attend(hidden) / jnp.sqrt(m.d_model).astype(hidden.dtype)
        else:
            out = self.lm_head(hidden)
        # hidden may be [B, d] (a decode step), [B, L, d] or [k, B, L, d] (MTP depths).
        names = (("activation_batch", "activation_vocab") if out.ndim == 2 else
                 (None,) * (out.ndim - 3) + ("activation_batch", "activation_length",
                                              "activation_vocab"))
        out = nn.with_logical_constraint(out, names)
        return out.astype(jnp.float32)

    def encode_audio(self, audio_features, audio_mask, with_encoder_frames: bool = False):
        """[B, A, T, n_mels] clips + [B, A, T] mask -> adaptor frames [B, A, F, d] + mask;
        with_encoder_frames: also the 25 Hz encoder frames [B, A, 2F, d_audio] + mask."""
        b, a, t, n = audio_features.shape
        outs = self.audio_encoder.encode(audio_features.reshape(b * a, t, n),
                                         audio_mask.reshape(b * a, t))
        outs = tuple(o.reshape(b, a, *o.shape[1:]) for o in outs)
        return outs if with_encoder_frames else outs[:2]

    def embed_inputs(self, tokens, audio_features=None, audio_mask=None, *, audio=None):
        """(embeddings [B, L, d], placeholder excess [B], adaptor frames + mask or None).

        The placeholders take the adaptor frames of the log-mel clips audio_features +
        audio_mask, or the precomputed `audio=(frames [B, A, F, d], mask [B, A, F])`.
        """
        if audio_features is not None and audio is not None:
            raise ValueError("embed_inputs: expected log-mel clips (audio_features) or adaptor "
                             "frames (audio), got both")
        x = self.embed_tokens(tokens)
        excess = jnp.zeros(tokens.shape[:1], jnp.int32)
        if audio_features is not None:
            audio = self.encode_audio(audio_features, audio_mask)
        if audio is not None:
            x, excess = splice_audio(x, tokens, self.layout.audio_placeholder_id, *audio)
        x = nn.with_logical_constraint(x, ("activation_batch", "activation_length",
                                           "activation_embed"))
        return x, excess, audio

    # -- entry points ---------------------------------------------------------------------

    def __call__(self, tokens, positions, segment_ids=None, audio_features=None,
                 audio_mask=None):
        """Training / scoring forward. Returns logits [B, L, V] (fp32), hidden [B, L, d] and,
        with audio, the adaptor frames [B, A, F, d] + mask [B, A, F] that were spliced in
        (auxiliary audio objectives such as CTC read them) and the 25 Hz encoder frames
        [B, A, 2F, d_audio] + mask the adaptor read."""
        encoded = None
        if audio_features is not None:
            encoded = self.encode_audio(audio_features, audio_mask, with_encoder_frames=True)
        x, excess, audio = self.embed_inputs(
            tokens, audio=None if encoded is None else encoded[:2])
        hidden, _ = self.decoder(x, positions, segment_ids)
        out = {"logits": self.logits(hidden), "hidden": hidden,
               "audio_placeholder_excess": excess}
        if encoded is not None:
            out.update(zip(AUDIO_OUTPUTS, encoded, strict=True))
        return out

    def prefill(self, tokens, lengths, cache: KVCache, audio_features=None, audio_mask=None):
        """Runs right-padded prompts [B, P] (valid lengths [B]) and fills cache rows [0, P).

        Rows past a prompt's length hold padding and are masked by `lengths` afterwards.
        """
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        x, _, _ = self.embed_inputs(tokens, audio_features, audio_mask)
        hidden, kv = self.decoder(x, positions, None, {"k": cache.k, "v": cache.v},
                                  jnp.zeros_like(lengths), prefill=True)
        return self.logits(hidden), hidden, KVCache(kv["k"], kv["v"], lengths)

    def decode(self, tokens, cache: KVCache):
        """Appends a window of W tokens [B, W] at each sequence's cache length.

        W = 1 is a plain decode step; W > 1 verifies a draft window. The returned cache has
        lengths + W; to reject a suffix, set lengths back (`cache.replace(lengths=...)`).
        """
        lengths = jnp.full(tokens.shape[:1], tokens.shape[1], jnp.int32)
        return self.extend(tokens, lengths, cache)

    def extend(self, tokens, lengths, cache: KVCache, audio_features=None, audio_mask=None, *,
               audio_frames=None, audio_frame_mask=None):
        """Appends each row's first lengths[b] tokens of the right-padded window [B, W] at
        that row's cache length (streaming input, a new turn of a conversation).

        `<audio>` placeholders among the new tokens take, in order, the valid adaptor frames
        of the clips audio_features [B, A, T, n_mels] + audio_mask [B, A, T] (log-mel, as for
        `prefill`), or the precomputed adaptor frames audio_frames [B, F, d] (or
        [B, A, F, d]) + audio_frame_mask [B, F] (a streaming encoder's output). Returns
        (logits [B, W, V], hidden [B, W, d], cache with lengths + lengths); slots past a row's
        count hold padding (their cache rows are past the new length, overwritten later).
        Needs cache.lengths + W <= capacity for every row (checked when lengths are concrete;
        a jitted caller checks with `check_extend`).
        """
        check_extend(tokens, lengths, cache)
        if audio_features is not None and audio_frames is not None:
            raise ValueError("extend: expected log-mel clips (audio_features) or adaptor frames "
                             "(audio_frames), got both")
        w = tokens.shape[1]
        # Padding slots never take an adaptor frame.
        tokens = jnp.where(jnp.arange(w)[None, :] < lengths[:, None], tokens, self.layout.pad_id)
        positions = cache.lengths[:, None] + jnp.arange(w)[None, :]
        audio = None
        if audio_frames is not None:
            if audio_frames.ndim == 3:
                audio_frames, audio_frame_mask = audio_frames[:, None], audio_frame_mask[:, None]
            audio = (audio_frames, audio_frame_mask)
        x, _, _ = self.embed_inputs(tokens, audio_features, audio_mask, audio=audio)
        hidden, kv = self.decoder(x, positions, None, {"k": cache.k, "v": cache.v},
                                  cache.lengths)
        return (self.logits(hidden), hidden,
                KVCache(kv["k"], kv["v"], cache.lengths + lengths.astype(jnp.int32)))

    # -- streaming audio input (chunked-causal encoder) -----------------------------------

    def stream_audio(self, state, mel, mask):
        """`AudioEncoder.stream_step` of this model's encoder: (state, frames, frame mask)."""
        return self.audio_encoder.stream_step(state, mel, mask)

    def flush_audio(self, state):
        """`AudioEncoder.stream_flush`: the open chunk's adaptor frames at the stream's end."""
        return self.audio_encoder.stream_flush(state)


def check_extend(tokens, lengths, cache: KVCache) -> None:
    """Shapes of an extend window, and (when the values are concrete) counts in [0, W] and
    cache.lengths + W <= capacity: the window is written whole at each row's length, and
    dynamic_update_slice would clamp (overwriting earlier rows) instead of failing."""
    if tokens.ndim != 2:
        raise ValueError(f"extend: tokens: expected [B, W] token ids, got shape {tokens.shape}")
    b, w = tokens.shape
    if lengths.shape != (b,):
        raise ValueError(f"extend: lengths: expected shape ({b},), got {lengths.shape}")
    if cache.lengths.shape != (b,):
        raise ValueError(f"extend: cache: expected {b} rows, got lengths of shape "
                         f"{cache.lengths.shape}")
    if isinstance(lengths, jax.core.Tracer) or isinstance(cache.lengths, jax.core.Tracer):
        return
    counts, used = np.asarray(lengths), np.asarray(cache.lengths)
    if counts.min() < 0 or counts.max() > w:
        raise ValueError(f"extend: lengths: expected values in [0, {w}] (the window width), "
                         f"got range [{counts.min()}, {counts.max()}]")
    needed = int(used.max()) + w
    if needed > cache.capacity:
        raise ValueError(f"cache capacity: expected >= {needed} (cache length {used.max()} + "
                         f"window {w}), got {cache.capacity}")
