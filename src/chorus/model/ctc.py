"""CTC over the audio adaptor frames: an auxiliary objective that makes the encoder listen.

Trained from scratch, an audio LM can lower its transcript loss for a long time by modelling
text alone; the decoder then learns to ignore the `<audio>` frames and the encoder's output
collapses to a constant (measured on cpu-tiny: loss with real, zeroed or shuffled audio
identical to 1e-4 after 200 steps). Hybrid CTC/attention training (Watanabe et al., 2017)
gives the encoder a direct alignment signal: a linear head over each adaptor frame predicts
the transcript's text tokens (class 0 = blank, text token t = class t + 1).
The head can read the 25 Hz encoder frames instead (`UnifiedAudioLM` returns both): about four
frames per transcript token rather than two, room for CTC's blanks (`clip_transcripts(width=)`).

A second, character-level CTC (`character_labels`) spells each clip's transcript pieces out
in `CHARACTERS`: every letter recurs across the whole corpus where a rare word's piece does
not, so the encoder learns the sounds words share (experiments/asr: `char_ctc_weight`).

Labels come from the token stream itself: clip c of a row owns the segment holding its first
`<audio>` placeholder, and its transcript is the supervised text targets of that segment after
the placeholder. That is the ASR layout (one clip per example); the backbone stays unaware.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
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


# The character-level CTC's classes (character i = class i + 1; 0 = blank): lowercase letters,
# digits (spelled as written: "7" is one label for the sound "seven"), apostrophe, space.
CHARACTERS = " abcdefghijklmnopqrstuvwxyz0123456789'"
MAX_PIECE_CHARACTERS = 16  # characters kept of one piece (the rest dropped)
SPACE_CLASS = CHARACTERS.index(" ") + 1


def character_table(pieces) -> tuple[np.ndarray, np.ndarray]:
    """(table [V, MAX_PIECE_CHARACTERS] int32 classes, lengths [V]) of text pieces `pieces`
    (piece id -> its string): each piece's characters, lowercased, SentencePiece's word marker
    "\u2581" as a space, anything outside CHARACTERS dropped (punctuation, special pieces)."""
    table = np.zeros((len(pieces), MAX_PIECE_CHARACTERS), np.int32)
    lengths = np.zeros(len(pieces), np.int32)
    for i, piece in enumerate(pieces):
        classes = [CHARACTERS.index(c) + 1 for c in piece.replace("\u2581", " ").lower()
                   if c in CHARACTERS][:MAX_PIECE_CHARACTERS]
        table[i, :len(classes)], lengths[i] = classes, len(classes)
    return table, lengths


def character_labels(labels: CtcLabels, table, lengths, width: int) -> CtcLabels:
    """Each clip's piece labels (class = text id + 1) spelled out in character classes
    (`character_table`), compacted into a [B, A, width] buffer; a leading space (the first
    word's marker) is dropped. A clip spelling more than `width` characters keeps its length
    and is infeasible for `ctc_loss`, as a piece transcript longer than its frames is."""
    table, lengths = jnp.asarray(table), jnp.asarray(lengths)
    pieces = jnp.clip(labels.labels - 1, 0, table.shape[0] - 1)  # [B, A, F]
    in_label = jnp.arange(labels.labels.shape[-1]) < labels.lengths[..., None]
    count = jnp.where(in_label, lengths[pieces], 0)  # characters per piece
    chars = table[pieces]  # [B, A, F, P]
    first = jnp.argmax(count > 0, axis=-1)  # the first piece that spells anything
    first_char = jnp.take_along_axis(chars[..., 0], first[..., None], axis=-1)[..., 0]
    lead = (first_char == SPACE_CLASS) & (count > 0).any(axis=-1)  # [B, A]
    offset = jnp.cumsum(count, axis=-1) - count - lead[..., None]  # each piece's first slot
    j = jnp.arange(table.shape[1])
    keep = (j < count[..., None]) & ~((offset[..., None] + j) < 0)  # the dropped lead space
    dest = jnp.where(keep, offset[..., None] + j, width)  # width = dropped
    b, a = pieces.shape[:2]
    rows = jnp.arange(b)[:, None, None, None]
    clips = jnp.arange(a)[None, :, None, None]
    out = jnp.zeros((b, a, width), jnp.int32).at[rows, clips, dest].set(chars, mode="drop")
    total = (count.sum(axis=-1) - lead).astype(jnp.int32)
    # pieces past the piece buffer were dropped: the spelling would be cut short
    total = jnp.where(labels.lengths > labels.labels.shape[-1], width + 1, total)
    return CtcLabels(out, total, labels.clip_valid)
