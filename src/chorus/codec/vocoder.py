"""Waveform from log-mel: a Vocos-style neural vocoder and a Griffin-Lim baseline.

Vocos idea: predict the STFT (log magnitude + phase) at the mel frame rate with a ConvNeXt
stack and let an inverse STFT do the upsampling; no transposed convolutions. Trained here
with multi-resolution spectral losses only (no adversarial term, to fit a CPU budget).
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


def vocoder_loss(model: Vocoder, params, batch: dict, mel_cfg: MelConfig, mel_mean, mel_std):
    """Log-mel L1 + multi-resolution STFT (spectral convergence + log magnitude) on a crop."""
    wave = batch["wave"]
    target_mel = mel_jax.log_mel(wave)
    mask = jnp.ones(target_mel.shape[:2])
    pred = model.apply({"params": params}, (target_mel - mel_mean) / mel_std, mask)
    mel_l1 = jnp.mean(jnp.abs(mel_jax.log_mel(pred) - target_mel))
    sc_total, mag_total = 0.0, 0.0
    for n_fft in model.cfg.stft_resolutions:
        ref = jnp.abs(mel_jax.stft(wave, n_fft, n_fft // 4))
        hyp = jnp.abs(mel_jax.stft(pred, n_fft, n_fft // 4))
        sc_total += jnp.sqrt(jnp.sum((ref - hyp) ** 2) / jnp.maximum(jnp.sum(ref**2), 1e-8))
        mag_total += jnp.mean(jnp.abs(jnp.log(jnp.maximum(ref, 1e-5))
                                      - jnp.log(jnp.maximum(hyp, 1e-5))))
    k = len(model.cfg.stft_resolutions)
    stft_loss = (sc_total + mag_total) / k
    loss = model.cfg.mel_weight * mel_l1 + model.cfg.stft_weight * stft_loss
    return loss, {"mel_l1": mel_l1, "stft": stft_loss}


def griffin_lim(log_mel_frames: np.ndarray, cfg: MelConfig, n_iter: int) -> np.ndarray:
    """Baseline: pseudo-inverse of the mel filterbank, then Griffin-Lim phase recovery."""
    import librosa

    from chorus.audio import mel as features

    power_mel = np.exp(np.asarray(log_mel_frames, np.float64)).T
    wave = librosa.feature.inverse.mel_to_audio(
        power_mel, sr=cfg.sample_rate, n_fft=features.N_FFT, hop_length=cfg.hop_length,
        win_length=features.WIN_LENGTH, center=True, pad_mode="constant", power=2.0,
        n_iter=n_iter, fmin=0.0, fmax=cfg.sample_rate / 2, htk=False, norm="slaney")
    target = log_mel_frames.shape[0] * cfg.hop_length
    return librosa.util.fix_length(wave, size=target).astype(np.float32)
