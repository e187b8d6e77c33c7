"""Log-mel and STFT / iSTFT in JAX, usable inside jit (the same log-mel definition as `mel.py`).

    feats = log_mel(waves)                      # (..., N) -> (..., N // 160, 128)
    spec = stft(waves, n_fft, hop)              # frames centred on f * hop, N // hop of them
    waves = istft(spec, n_fft, hop, mask)       # weighted overlap-add inverse of `stft`

Conventions: frame f is centred on sample f * hop (zero padding of n_fft / 2 on both ends) and
a clip of N samples has N // hop frames, so one second at 16 kHz is exactly 100 frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chorus.audio import mel


def log_mel(waves: jax.Array) -> jax.Array:
    """(..., N) float 16 kHz -> (..., N // 160, 128) float32; N must be static."""
    spectrum = stft(jnp.asarray(waves, jnp.float32), mel.N_FFT, mel.HOP_LENGTH)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    mels = jnp.matmul(power, mel.mel_filterbank(), precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mels, mel.LOG_FLOOR))


def frame_mask(num_samples: jax.Array, num_frames: int) -> jax.Array:
    """(...,) valid sample counts -> (..., num_frames) bool: frames inside each clip."""
    return jnp.arange(num_frames) < (jnp.asarray(num_samples) // mel.HOP_LENGTH)[..., None]


def stft(wave: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
    """(..., N) real -> (..., N // hop, n_fft // 2 + 1) complex, frames centred on f * hop."""
    win = jnp.asarray(mel.hann_window(n_fft))
    pad = [(0, 0)] * (wave.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    padded = jnp.pad(wave, pad)
    idx = mel.frame_indices(wave.shape[-1], n_fft, hop_length)
    return jnp.fft.rfft(padded[..., idx] * win, axis=-1)


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
    win = jnp.asarray(mel.hann_window(n_fft))
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
