"""Log-mel features of clips, their per-bin normalization, and length bucketing.

The feature definition is the project's (`chorus.audio.mel_jax.log_mel`).
Bucketing: clips are zero-padded to a multiple of `bucket` samples before the (jitted) log-mel
so only a few shapes are compiled; frames of a padded clip equal those of the unpadded clip
because framing already pads with zeros.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

from chorus import atomic
from chorus.audio.mel_jax import log_mel
from chorus.codec.compile import jit
from chorus.codec.config import MelConfig


@dataclasses.dataclass(frozen=True)
class MelStats:
    """Per-bin mean and standard deviation of training log-mels (models see normalized mels)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_frames(cls, mels: list[np.ndarray]) -> MelStats:
        allf = np.concatenate(mels, axis=0).astype(np.float64)
        return cls(allf.mean(0).astype(np.float32),
                   np.maximum(allf.std(0), 1e-3).astype(np.float32))

    def normalize(self, mel):
        return (mel - self.mean) / self.std

    def denormalize(self, mel):
        return mel * self.std + self.mean

    def save(self, path: str) -> None:
        atomic.write_npz(path, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: str) -> MelStats:
        with np.load(path) as data:
            return cls(data["mean"], data["std"])


@functools.lru_cache(maxsize=8)
def _jitted_log_mel(cfg: MelConfig):
    del cfg  # validated against the one definition when the config was built
    return jit(log_mel)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def clip_log_mel(wave: np.ndarray, cfg: MelConfig, bucket: int | None = None) -> np.ndarray:
    """(N,) -> (N // hop, n_mels) raw log-mel, computed on a bucket-padded copy."""
    bucket = bucket or cfg.sample_rate
    padded = np.zeros(round_up(max(wave.size, 1), bucket), np.float32)
    padded[:wave.size] = wave
    frames = wave.size // cfg.hop_length
    return np.asarray(_jitted_log_mel(cfg)(jnp.asarray(padded)))[:frames]


def pad_batch(arrays: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacks (T_i, ...) arrays into (B, length, ...) with zeros, plus a (B, length) mask."""
    out = np.zeros((len(arrays), length, *arrays[0].shape[1:]), arrays[0].dtype)
    mask = np.zeros((len(arrays), length), np.float32)
    for i, a in enumerate(arrays):
        n = min(a.shape[0], length)
        out[i, :n] = a[:n]
        mask[i, :n] = 1.0
    return out, mask
