"""Log-mel features of clips, length bucketing and batch padding.

The feature definition is the project's (`chorus.audio.mel_jax.log_mel`); what the networks
see is `MelConfig.normalize` of it. Bucketing: clips are zero-padded to a multiple of `bucket`
samples before the (jitted) log-mel so only a few shapes are compiled; frames of a padded clip
equal those of the unpadded clip because framing already pads with zeros.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from chorus.audio.mel_jax import log_mel
from chorus.codec.compile import jit
from chorus.codec.config import MelConfig


@functools.lru_cache(maxsize=1)
def _jitted_log_mel():
    return jit(log_mel)  # on first use: importing this module compiles nothing


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def clip_log_mel(wave: np.ndarray, cfg: MelConfig, bucket: int | None = None) -> np.ndarray:
    """(N,) -> (N // hop, n_mels) raw log-mel, computed on a bucket-padded copy."""
    bucket = bucket or cfg.sample_rate
    padded = np.zeros(round_up(max(wave.size, 1), bucket), np.float32)
    padded[:wave.size] = wave
    frames = wave.size // cfg.hop_length
    return np.asarray(_jitted_log_mel()(jnp.asarray(padded)))[:frames]


def pad_batch(arrays: list[np.ndarray], length: int,
              rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stacks (T_i, ...) arrays into (rows, length, ...) with zeros, plus a (rows, length) mask.

    rows defaults to len(arrays); extra rows are all padding (mask 0)."""
    rows = len(arrays) if rows is None else rows
    out = np.zeros((rows, length, *arrays[0].shape[1:]), arrays[0].dtype)
    mask = np.zeros((rows, length), np.float32)
    for i, a in enumerate(arrays):
        n = min(a.shape[0], length)
        out[i, :n] = a[:n]
        mask[i, :n] = 1.0
    return out, mask
