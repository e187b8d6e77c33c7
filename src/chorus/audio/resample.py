"""Resampling to the project's 16 kHz (soxr HQ), shared by synthesis, data, codec and decoding.

Uses soxr's "HQ" quality directly: the same resampler as librosa.resample(res_type="soxr_hq")
(soxr is a librosa dependency), without librosa's ~2.5 s of lazy imports on first use,
which every fresh synthesis process would otherwise pay.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) float wave at `orig_sr` -> float32 wave at `target_sr`."""
    for name, rate in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if rate <= 0:
            raise ValueError(f"resample {name}: expected > 0, got {rate}")
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == target_sr or wave.size == 0:
        return wave
    import soxr  # imported lazily: only needed when rates differ

    return soxr.resample(wave, orig_sr, target_sr, quality="HQ").astype(np.float32)
