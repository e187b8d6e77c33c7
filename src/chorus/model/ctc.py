"""CTC over the audio adaptor frames: an auxiliary objective that makes the encoder listen.

Trained from scratch, an audio LM can lower its transcript loss for a long time by modelling
text alone; the decoder then learns to ignore the `<audio>` frames and the encoder's output
collapses to a constant (measured on cpu-tiny: loss with real, zeroed or shuffled audio
identical to 1e-4 after 200 steps). Hybrid CTC/attention training (Watanabe et al., 2017)
gives the encoder a direct alignment signal: a linear head over each adaptor frame predicts
the transcript's text tokens (class 0 = blank, text token t = class t + 1).
The head can read the 25 Hz encoder frames instead (`UnifiedAudioLM` returns both): about four
frames per transcript token rather than two, room for CTC's blanks (`clip_transcripts(width=)`).

Labels come from the token stream itself: clip c of a row owns the segment holding its first
`<audio>` placeholder, and its transcript is the supervised text targets of that segment after
the placeholder. That is the ASR layout (one clip per example); the backbone stays unaware.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from chorus.model.layers import RMSNorm, dense_init


class CtcHead(nn.Module):
    """[..., F, d] adaptor frames -> [..., F, text_size + 1] fp32 logits (class 0 = blank)."""

    text_size: int

    @nn.compact
    def __call__(self, frames):
        x = RMSNorm(name="norm")(frames.astype(jnp.float32))
        return nn.Dense(self.text_size + 1, kernel_init=dense_init(("embed", "vocab")),
                        name="proj")(x)


@flax.struct.dataclass
class CtcLabels:
    labels: jax.Array  # [B, A, F] int32 classes (text id + 1), 0 after each clip's length
    lengths: jax.Array  # [B, A] transcript tokens per clip (may exceed F: then infeasible)
    clip_valid: jax.Array  # [B, A] the clip has frames and a placeholder in the stream


def clip_transcripts(tokens, targets, loss_mask, segment_ids, frame_mask, *,
                     placeholder_id: int, text_size: int, width: int | None = None
                     ) -> CtcLabels:
    """Each clip's transcript, compacted to the left of a [B, A, width] label buffer.

    tokens / targets / loss_mask / segment_ids [B, L] as in a training batch; frame_mask
    [B, A, F] the adaptor frames that were spliced in (clip order = placeholder order);
    width: the frames the CTC runs over (default F; 2F for the 25 Hz encoder frames).
    """
    b, a, f = frame_mask.shape
    f = f if width is None else width
    length = tokens.shape[1]
    is_placeholder = tokens == placeholder_id
    rank = jnp.cumsum(is_placeholder, axis=1) - 1  # [B, L]
    num_frames = frame_mask.sum(axis=-1)  # [B, A]
    first_rank = jnp.cumsum(num_frames, axis=1) - num_frames  # [B, A]
    is_first = is_placeholder[:, None, :] & (rank[:, None, :] == first_rank[..., None])
    first_pos = jnp.argmax(is_first, axis=-1)  # [B, A]
    clip_valid = (num_frames > 0) & is_first.any(axis=-1)
    clip_segment = jnp.take_along_axis(segment_ids, first_pos, axis=1)
    positions = jnp.arange(length)[None, None, :]
    selected = ((segment_ids[:, None, :] == clip_segment[..., None])
                & (positions > first_pos[..., None]) & clip_valid[..., None]
                & (loss_mask[:, None, :] > 0) & (targets[:, None, :] >= 0)
                & (targets[:, None, :] < text_size))
    dest = jnp.where(selected, jnp.cumsum(selected, axis=-1) - 1, f)  # f = dropped
    rows = jnp.arange(b)[:, None, None]
    clips = jnp.arange(a)[None, :, None]
    values = jnp.broadcast_to(targets[:, None, :] + 1, selected.shape).astype(jnp.int32)
    labels = jnp.zeros((b, a, f), jnp.int32).at[rows, clips, dest].set(values, mode="drop")
    return CtcLabels(labels, selected.sum(axis=-1).astype(jnp.int32), clip_valid)


def ctc_loss(logits, frame_mask, labels: CtcLabels):
    """(per-token CTC loss, metrics) over the feasible clips.

    logits [B, A, F, K]; a clip is feasible when its transcript fits its frames (CTC needs
    one frame per label plus one blank between repeated labels). The loss is the summed
    negative log-likelihood divided by the number of transcript tokens.
    """
    b, a, f, k = logits.shape
    num_frames = frame_mask.sum(axis=-1)
    in_label = jnp.arange(f)[None, None, :] < labels.lengths[..., None]
    repeats = (in_label[..., 1:] & (labels.labels[..., 1:] == labels.labels[..., :-1])).sum(-1)
    feasible = labels.clip_valid & (labels.lengths > 0) & (
        labels.lengths + repeats <= num_frames)
    per_clip = optax.ctc_loss(logits.reshape(b * a, f, k),
                              (~frame_mask).reshape(b * a, f).astype(jnp.float32),
                              labels.labels.reshape(b * a, f),
                              (~in_label).reshape(b * a, f).astype(jnp.float32)).reshape(b, a)
    weight = feasible.astype(jnp.float32)
    tokens = jnp.sum(labels.lengths * weight)
    loss = jnp.sum(jnp.where(feasible, per_clip, 0.0)) / jnp.maximum(tokens, 1.0)
    metrics = {"ctc/loss": loss, "ctc/clips": weight.sum(),
               "ctc/infeasible": jnp.sum(labels.clip_valid & ~feasible).astype(jnp.float32)}
    return loss, jax.lax.stop_gradient(metrics)
