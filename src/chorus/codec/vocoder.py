"""Waveform from log-mel: a Vocos-style neural vocoder and a Griffin-Lim baseline.

Vocos idea: predict the STFT (log magnitude + phase) at the mel frame rate with a ConvNeXt
stack and let an inverse STFT do the upsampling; no transposed convolutions. Trained with
multi-resolution spectral losses only (experiments/codec/losses.py; no adversarial term, to
fit a CPU budget).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chorus.audio import mel_jax
from chorus.codec.config import MelConfig, VocoderConfig
from chorus.codec.layers import ConvNeXtBlock


class Vocoder(nn.Module):
    cfg: VocoderConfig
    hop_length: int

    @nn.compact
    def __call__(self, mel: jax.Array, mask: jax.Array) -> jax.Array:
        """Normalized log-mel (B, T, n_mels), frame mask (B, T) -> waveform (B, T * hop)."""
        c = self.cfg
        pad = c.kernel_size // 2
        h = nn.Conv(c.dim, (c.kernel_size,), padding=((pad, pad),), name="embed")(
            mel * mask[..., None])
        h = nn.LayerNorm(name="embed_norm")(h) * mask[..., None]
        for i in range(c.blocks):
            h = ConvNeXtBlock(c.dim, c.kernel_size, mlp_ratio=c.mlp_ratio,
                              layer_scale=1.0 / c.blocks, name=f"block_{i}")(h, mask)
        h = nn.LayerNorm(name="head_norm")(h)
        bins = c.n_fft // 2 + 1
        out = nn.Dense(2 * bins, name="head")(h)
        log_mag, phase = out[..., :bins], out[..., bins:]
        # Why the clip: exp of an untrained head can overflow; 1e2 is far above speech levels.
        mag = jnp.minimum(jnp.exp(log_mag), 1e2)
        spec = mag * jnp.cos(phase) + 1j * (mag * jnp.sin(phase))
        return mel_jax.istft(spec, c.n_fft, self.hop_length, frame_mask=mask)


def griffin_lim(log_mel_frames: np.ndarray, cfg: MelConfig, n_iter: int) -> np.ndarray:
    """Baseline: pseudo-inverse of the mel filterbank, then Griffin-Lim phase recovery."""
    import librosa

    from chorus.audio import mel as features

    power_mel = np.exp(np.asarray(log_mel_frames, np.float64)).T
    stft = librosa.feature.inverse.mel_to_stft(
        power_mel, sr=cfg.sample_rate, n_fft=features.N_FFT, power=2.0, fmin=0.0,
        fmax=cfg.sample_rate / 2, htk=False, norm="slaney")
    # A fixed random initial phase: librosa's default draws from numpy's global generator,
    # which made the baseline depend on what ran before it.
    wave = librosa.griffinlim(stft, n_iter=n_iter, hop_length=cfg.hop_length,
                              win_length=features.WIN_LENGTH, center=True,
                              pad_mode="constant", random_state=0)
    target = log_mel_frames.shape[0] * cfg.hop_length
    return librosa.util.fix_length(wave, size=target).astype(np.float32)
