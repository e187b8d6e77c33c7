"""Audio metrics: mel-cepstral distortion between time-aligned log-mel frames."""

from __future__ import annotations

import numpy as np


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
                            num_coeffs: int = 24) -> float:
    """MCD in dB over time-aligned frames: (10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2)."""
    ref, test = np.asarray(ref_log_mel), np.asarray(test_log_mel)
    if ref.shape != test.shape:
        raise ValueError(f"mel_cepstral_distortion: expected equal shapes, got {ref.shape} and "
                         f"{test.shape}")
    diff = mel_cepstra(ref, num_coeffs) - mel_cepstra(test, num_coeffs)
    per_frame = (10.0 / np.log(10.0)) * np.sqrt(2.0 * np.sum(diff**2, axis=-1))
    return float(np.mean(per_frame))
