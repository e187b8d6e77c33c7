"""STFT / iSTFT for the vocoder, the codec's log-mel, and mel-cepstral distortion.

Conventions: frame f is centred on sample f * hop (zero padding of n_fft / 2 on both ends) and
a clip of N samples has N // hop frames, so one second at 16 kHz is exactly 100 frames and
25 codes. The log-mel is the project's feature definition (`data_pipelines.features_jax`,
natural log of mel power); `stft` / `istft` serve the vocoder's multi-resolution loss and its
iSTFT head.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from chorus.codec.config import MelConfig


def num_frames(num_samples: int, hop_length: int) -> int:
    return num_samples // hop_length


@functools.lru_cache(maxsize=16)
def _window(n_fft: int) -> np.ndarray:
    """Periodic Hann of n_fft samples."""
    n = np.arange(n_fft)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)).astype(np.float32)


def stft(wave: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
    """(..., N) real -> (..., N // hop, n_fft // 2 + 1) complex, frames centred on f * hop."""
    win = jnp.asarray(_window(n_fft))
    frames = wave.shape[-1] // hop_length
    pad = [(0, 0)] * (wave.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    padded = jnp.pad(wave, pad)
    idx = np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
    return jnp.fft.rfft(padded[..., idx] * win, axis=-1)


def log_mel(wave: jax.Array, cfg: MelConfig) -> jax.Array:
    """(..., N) -> (..., N // hop, n_mels) natural-log mel power (data_pipelines definition)."""
    from data_pipelines.features_jax import log_mel as project_log_mel

    del cfg  # validated against the same definition when the config was built
    return project_log_mel(wave)


def _overlap_add(frames: jax.Array, hop_length: int) -> jax.Array:
    """(..., F, n_fft) -> (..., (F - 1) * hop + n_fft); n_fft must be a multiple of hop."""
    *lead, num, n_fft = frames.shape
    ratio = n_fft // hop_length
    parts = frames.reshape(*lead, num, ratio, hop_length)
    total = (num + ratio - 1) * hop_length
    out = jnp.zeros((*lead, total), frames.dtype)
    for j in range(ratio):
        seg = parts[..., :, j, :].reshape(*lead, num * hop_length)
        pad = [(0, 0)] * len(lead) + [(j * hop_length, (ratio - 1 - j) * hop_length)]
        out = out + jnp.pad(seg, pad)
    return out


def istft(spec: jax.Array, n_fft: int, hop_length: int,
          frame_mask: jax.Array | None = None) -> jax.Array:
    """Inverse of `stft` (Hann window, weighted overlap-add): (..., F, K) -> (..., F * hop).

    `frame_mask` (..., F) drops padded frames from both the signal and the window envelope,
    so a padded batch element decodes exactly like the unpadded clip.
    """
    win = jnp.asarray(_window(n_fft))
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1) * win
    weight = jnp.broadcast_to(win**2, frames.shape)
    if frame_mask is not None:
        frames = frames * frame_mask[..., None]
        weight = weight * frame_mask[..., None]
    num = spec.shape[-2]
    start = n_fft // 2
    signal = _overlap_add(frames, hop_length)[..., start:start + num * hop_length]
    envelope = _overlap_add(weight, hop_length)[..., start:start + num * hop_length]
    return signal / jnp.maximum(envelope, 1e-6)


def mel_cepstra(log_mel_frames: np.ndarray, num_coeffs: int = 24) -> np.ndarray:
    """Mel cepstra c_1..c_D of natural-log mel *power* frames (c_0, the energy, is dropped).

    c_n = (1 / M) sum_m log A_m cos(pi n (m + 1/2) / M) of the log amplitude
    log A = 0.5 * log power: the cepstrum's usual scale (a cosine of amplitude b in the log
    amplitude spectrum gives c_n = b / 2), so MCD values are comparable in magnitude with
    mel-cepstrum (SPTK-style) figures; an orthonormal DCT would be sqrt(2M) times larger.
    """
    from scipy.fft import dct

    x = 0.5 * np.asarray(log_mel_frames, np.float64)
    return (dct(x, type=2, norm=None, axis=-1) / (2 * x.shape[-1]))[..., 1:num_coeffs + 1]


def mel_cepstral_distortion(ref_log_mel: np.ndarray, test_log_mel: np.ndarray,
                            num_coeffs: int = 24, frame_mask: np.ndarray | None = None) -> float:
    """MCD in dB over time-aligned frames: (10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2)."""
    ref, test = np.asarray(ref_log_mel), np.asarray(test_log_mel)
    if ref.shape != test.shape:
        raise ValueError(f"mel_cepstral_distortion: expected equal shapes, got {ref.shape} and "
                         f"{test.shape}")
    diff = mel_cepstra(ref, num_coeffs) - mel_cepstra(test, num_coeffs)
    per_frame = (10.0 / np.log(10.0)) * np.sqrt(2.0 * np.sum(diff**2, axis=-1))
    if frame_mask is not None:
        per_frame = per_frame[np.asarray(frame_mask, bool)]
    return float(np.mean(per_frame))
