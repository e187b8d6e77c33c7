"""Token streams in the unified vocabulary (`chorus.vocab`): the generic part of every regime.

A stream is a list of parts `(ids, supervised)`; a mode's regime (its experiment module) says
which parts, in which order. `assemble` turns them into the arrays the packer needs:
`targets[i] = tokens[i + 1]` (pad after the last token) and `loss_mask[i] = 1` exactly when
`targets[i]` belongs to a supervised part. `supervised` may also be a weight >= 0 (True = 1):
`loss_mask[i]` is then that part's weight, and the loss, a mean weighted by the mask, gives
the part that share (e.g. the realtime answer's speech codes beside its text). The prompt (what
a decoder is given at eval) is every token before the first supervised one (weight > 0).

Audio input enters a stream as `<audio>` placeholders, one per adaptor frame:
`audio_placeholders(layout, num_mel_frames)` (N = num_audio_placeholders(frames)); the model
fills them with the clip's encoder + adaptor frames.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chorus.vocab import VocabLayout, num_audio_placeholders

Part = tuple[np.ndarray, bool | float]  # (ids, supervised: a bool or a loss weight >= 0)


@dataclasses.dataclass(frozen=True)
class Stream:
    tokens: np.ndarray  # int32 [n]
    targets: np.ndarray  # int32 [n]
    loss_mask: np.ndarray  # float32 [n]
    prompt_length: int  # tokens[:prompt_length] is the decoding prompt


def ids(*values: int) -> np.ndarray:
    """A part of literal ids (specials): ids(s("<asr>"))."""
    return np.asarray(values, dtype=np.int32)


def audio_placeholders(layout: VocabLayout, num_mel_frames: int) -> np.ndarray:
    """The `<audio>` x N part of a clip of `num_mel_frames` log-mel frames."""
    return np.full(num_audio_placeholders(num_mel_frames), layout.audio_placeholder_id, np.int32)


def assemble(parts: list[Part], pad_id: int) -> Stream:
    for _, weight in parts:
        if not float(weight) >= 0:  # also NaN
            raise ValueError(f"stream part weight: expected a bool or a number >= 0, got "
                             f"{weight!r}")
    tokens = np.concatenate([np.asarray(part, np.int32) for part, _ in parts])
    weights = np.concatenate([np.full(len(part), float(w), np.float32) for part, w in parts])
    targets = np.append(tokens[1:], np.int32(pad_id)).astype(np.int32)
    loss_mask = np.append(weights[1:], 0.0).astype(np.float32)
    supervised = weights > 0
    first_supervised = int(np.argmax(supervised)) if supervised.any() else len(tokens)
    return Stream(tokens, targets, loss_mask, prompt_length=first_supervised)
