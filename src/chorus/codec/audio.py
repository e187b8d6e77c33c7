"""Waveform I/O and validation: every clip entering the codec passes through `check_wave`."""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf

from chorus.codec.atomic import atomic_path


class AudioError(ValueError):
    """Bad audio input; the message names the source, the field, what was expected and got."""


def check_wave(wave: np.ndarray, source: str, min_samples: int) -> np.ndarray:
    """Returns `wave` as float32 mono, or raises AudioError (empty, too short, NaN / inf)."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise AudioError(f"{source}: samples: expected a mono 1-D waveform, got shape "
                         f"{wave.shape}")
    if wave.size == 0:
        raise AudioError(f"{source}: samples: expected audio, got an empty waveform (0 samples)")
    if wave.size < min_samples:
        raise AudioError(f"{source}: duration: expected at least {min_samples} samples, got "
                         f"{wave.size} (too short)")
    if not np.all(np.isfinite(wave)):
        bad = int(np.size(wave) - np.count_nonzero(np.isfinite(wave)))
        raise AudioError(f"{source}: samples: expected finite values, got {bad} NaN/inf "
                         "samples")
    return wave.astype(np.float32, copy=False)


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling at the exact rational ratio."""
    if orig_rate == target_rate or not wave.size:
        return np.asarray(wave, np.float32)
    from scipy.signal import resample_poly  # scipy comes with librosa

    g = math.gcd(orig_rate, target_rate)
    return resample_poly(wave, target_rate // g, orig_rate // g).astype(np.float32)


def read_wav(path: str, sample_rate: int, min_samples: int) -> np.ndarray:
    """Reads an audio file as float32 mono at `sample_rate` (multi-channel is averaged)."""
    if not os.path.isfile(path):
        raise AudioError(f"{path}: file: expected an existing audio file, got no such file")
    try:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: format: expected a readable audio file, got: {e}") from None
    wave = wave.mean(axis=1)
    if wave.size and np.all(np.isfinite(wave)):
        wave = resample(wave, rate, sample_rate)
    return check_wave(wave, path, min_samples)


def write_wav(path: str, wave: np.ndarray, sample_rate: int) -> None:
    """Writes 16-bit PCM atomically (temp file in the same folder, then os.replace)."""
    wave = check_wave(np.asarray(wave), f"{path} (to write)", 1)
    with atomic_path(path) as tmp:  # temp name ends with the basename: keeps ".wav"
        sf.write(tmp, np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")

