"""Players of an input and what a coalition does to it: every player is a span of one axis
(time frames or mel bands of a log-mel, tokens of a prompt); a coalition keeps its players'
spans and sets the rest to a baseline.

    players = time_segments(num_frames=300, count=10)      # ten 0.3 s spans of a log-mel
    variants = mask_axis(log_mel, keep, players, baseline)  # keep [B, n] -> [B, T, n_mels]
    prompts = mask_tokens(tokens, keep, players, mask_id)   # keep [B, n] -> [B, L]

The model never sees a shorter input: a masked span keeps its length and takes the baseline's
values (the normalized log-mel mean, silence, or a mask token), chosen explicitly by the
caller, so f(S) differs from f(N) only through what the players carry.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from chorus.audio import mel
from chorus.vocab import MEL_FRAMES_PER_SECOND

AXES = ("time", "frequency", "tokens")
AUDIO_BASELINES = ("mean", "silence")


@dataclasses.dataclass(frozen=True)
class Players:
    """`spans[i] = (start, end)` of player i along `axis` (disjoint, in order)."""

    axis: str
    spans: tuple[tuple[int, int], ...]
    names: tuple[str, ...]

    def __post_init__(self):
        if self.axis not in AXES:
            raise ValueError(f"Players.axis: expected one of {list(AXES)}, got {self.axis!r}")
        if len(self.spans) < 2:
            raise ValueError(f"Players.spans: expected at least 2 players, got {len(self.spans)}")
        if len(self.names) != len(self.spans):
            raise ValueError(f"Players.names: expected {len(self.spans)} names, got "
                             f"{len(self.names)}")
        end = 0
        for i, (a, b) in enumerate(self.spans):
            if not end <= a < b:
                raise ValueError(f"Players.spans[{i}]: expected a non-empty span starting at or "
                                 f"after {end}, got ({a}, {b})")
            end = b

    @property
    def count(self) -> int:
        return len(self.spans)

    def index_of(self, length: int) -> np.ndarray:
        """int32 [length]: the player owning each position of the axis, -1 for none."""
        owner = np.full(length, -1, np.int32)
        for i, (a, b) in enumerate(self.spans):
            if b > length:
                raise ValueError(f"Players.spans[{i}] = ({a}, {b}) reaches past the {self.axis} "
                                 f"axis of length {length}")
            owner[a:b] = i
        return owner

    def to_json(self) -> dict:
        return {"axis": self.axis, "spans": [list(s) for s in self.spans],
                "names": list(self.names)}


def even_spans(length: int, count: int) -> tuple[tuple[int, int], ...]:
    """`count` contiguous spans covering [0, length) whose lengths differ by at most one."""
    if not 2 <= count <= length:
        raise ValueError(f"players: expected 2 <= count <= {length} (the axis length), got "
                         f"{count}")
    edges = np.linspace(0, length, count + 1).round().astype(int)
    return tuple((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True))


def time_segments(num_frames: int, count: int,
                  frames_per_second: float = MEL_FRAMES_PER_SECOND) -> Players:
    """`count` equal time spans of a log-mel of `num_frames` frames, named by their seconds."""
    spans = even_spans(num_frames, count)
    names = tuple(f"{a / frames_per_second:.2f}-{b / frames_per_second:.2f}s" for a, b in spans)
    return Players("time", spans, names)


def mel_bands(num_mels: int, count: int) -> Players:
    """`count` equal bands of mel channels, named by their channel range."""
    spans = even_spans(num_mels, count)
    return Players("frequency", spans, tuple(f"mel {a}-{b - 1}" for a, b in spans))


def token_spans(pieces: list[np.ndarray], names: list[str], offset: int = 0) -> Players:
    """Players over a token stream: piece i (e.g. a word's token ids) is player i, the pieces
    laid out one after another from `offset`."""
    spans, start = [], offset
    for i, piece in enumerate(pieces):
        if len(piece) == 0:
            raise ValueError(f"token_spans: piece {i} ({names[i]!r}) has no tokens")
        spans.append((start, start + len(piece)))
        start += len(piece)
    return Players("tokens", tuple(spans), tuple(names))


def audio_baseline(kind: str, shape: tuple[int, int], mel_mean: float) -> np.ndarray:
    """float32 [T, n_mels] baseline log-mel: "mean" (the encoder's normalization mean, i.e. a
    normalized input of 0) or "silence" (the log-mel of digital silence, the log floor)."""
    if kind == "mean":
        value = mel_mean
    elif kind == "silence":
        value = float(np.log(mel.LOG_FLOOR))
    else:
        raise ValueError(f"baseline: expected one of {list(AUDIO_BASELINES)}, got {kind!r}")
    return np.full(shape, value, np.float32)


def mask_axis(features, keep, players: Players, baseline):
    """features [T, F] (jnp or np), keep [B, n] bool, baseline [T, F] -> [B, T, F]: the
    positions of players not kept take the baseline's values."""
    axis = {"time": 0, "frequency": 1}.get(players.axis)
    if axis is None:
        raise ValueError(f"mask_axis: expected time or frequency players, got {players.axis!r}")
    keep = jnp.asarray(keep, bool)
    if keep.ndim != 2 or keep.shape[1] != players.count:
        raise ValueError(f"mask_axis keep: expected [B, {players.count}], got {keep.shape}")
    return mask_by_owner(features, keep, players.index_of(features.shape[axis]), baseline,
                         axis)


def mask_by_owner(features, keep, owner, baseline, axis: int):
    """mask_axis with the players given as `owner` [T or F] (each position's player, -1 for
    none; an array, so one compiled program serves every clip of a shape)."""
    owner = jnp.asarray(owner)
    # A position no player owns is always kept.
    kept = jnp.where(owner >= 0, keep[:, jnp.maximum(owner, 0)], True)  # [B, T or F]
    kept = kept[:, :, None] if axis == 0 else kept[:, None, :]
    return jnp.where(kept, jnp.asarray(features)[None], jnp.asarray(baseline)[None])


def mask_tokens(tokens, keep, players: Players, mask_id: int):
    """tokens [L], keep [B, n] bool -> [B, L]: the tokens of players not kept become
    `mask_id` (the stream keeps its length and positions)."""
    if players.axis != "tokens":
        raise ValueError(f"mask_tokens: expected token players, got {players.axis!r}")
    keep = jnp.asarray(keep, bool)
    if keep.ndim != 2 or keep.shape[1] != players.count:
        raise ValueError(f"mask_tokens keep: expected [B, {players.count}], got {keep.shape}")
    owner = jnp.asarray(players.index_of(len(tokens)))
    kept = jnp.where(owner >= 0, keep[:, jnp.maximum(owner, 0)], True)
    return jnp.where(kept, jnp.asarray(tokens, jnp.int32)[None], jnp.int32(mask_id))
