"""Optional waveform augmentation on the host: speed, volume, additive noise.

Each is off unless its range is set. Speed perturbation resamples (tempo and pitch change
together, as in Kaldi's speed perturbation); volume is a gain in dB; noise is white noise at a
signal-to-noise ratio in dB. Draws come from the `np.random.Generator` grain hands each example,
so augmentation is reproducible from the pipeline seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    speed_range: tuple[float, float] | None = None  # e.g. (0.9, 1.1)
    gain_db_range: tuple[float, float] | None = None  # e.g. (-6.0, 6.0)
    noise_snr_db_range: tuple[float, float] | None = None  # e.g. (10.0, 40.0)

    def __post_init__(self):
        for name in ("speed_range", "gain_db_range", "noise_snr_db_range"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"AugmentConfig.{name}: expected None or (low, high) with "
                                 f"low <= high, got {value!r}")
        if self.speed_range is not None and self.speed_range[0] <= 0:
            raise ValueError(f"AugmentConfig.speed_range: expected positive factors, got "
                             f"{self.speed_range!r}")

    @property
    def enabled(self) -> bool:
        return any(r is not None for r in (self.speed_range, self.gain_db_range,
                                            self.noise_snr_db_range))


NO_AUGMENT = AugmentConfig()


def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Plays `wave` `factor` times faster (linear interpolation)."""
    if factor == 1.0 or wave.size < 2:
        return wave
    n_out = max(1, int(round(len(wave) / factor)))
    positions = np.arange(n_out, dtype=np.float64) * factor
    return np.interp(positions, np.arange(len(wave)), wave).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    signal_power = float(np.mean(wave.astype(np.float64) ** 2))
    noise_power = signal_power / (10.0 ** (snr_db / 10.0))
    noise = rng.standard_normal(len(wave)) * np.sqrt(noise_power)
    return (wave + noise).astype(np.float32)


def augment(wave: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    if config.speed_range is not None:
        wave = change_speed(wave, float(rng.uniform(*config.speed_range)))
    if config.gain_db_range is not None:
        wave = wave * np.float32(10.0 ** (rng.uniform(*config.gain_db_range) / 20.0))
    if config.noise_snr_db_range is not None:
        wave = add_noise(wave, float(rng.uniform(*config.noise_snr_db_range)), rng)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)
