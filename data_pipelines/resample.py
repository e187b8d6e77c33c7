"""Resampling to the project's 16 kHz, shared by synthesis and decoding.

Uses soxr's "HQ" quality directly: the same resampler as librosa.resample(res_type="soxr_hq")
(soxr is a librosa dependency), without librosa's ~2.5 s of lazy imports on first use,
which every fresh synthesis process would otherwise pay.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000


def resample_to_16k(wave: np.ndarray, orig_sr: int) -> np.ndarray:
    """(N,) float wave at `orig_sr` -> float32 wave at 16 kHz."""
    if orig_sr <= 0:
        raise ValueError(f"resample orig_sr: expected > 0, got {orig_sr}")
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == SAMPLE_RATE or wave.size == 0:
        return wave
    import soxr  # imported lazily: only needed when rates differ

    return soxr.resample(wave, orig_sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
