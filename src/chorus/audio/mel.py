"""128-bin log-mel features on the host (NumPy); `mel_jax.py` is the jit-able twin.

Definition (the model's audio input):
  16 kHz mono, 25 ms periodic-Hann window (400 samples), 10 ms hop (160), n_fft = 400,
  frames centred on sample f * 160 with zero padding, power spectrum |STFT|^2,
  Slaney-normalized mel filters (librosa.filters.mel, htk=False, fmin=0, fmax=8 kHz),
  natural log with floor: log(max(mel, LOG_FLOOR)).
  A clip of N samples has N // 160 frames (= librosa's first N // 160 centred frames), so
  1 s = 100 frames and 8 s = 800.
Tested against librosa.feature.melspectrogram(..., power=2.0) then log.
"""

from __future__ import annotations

import functools

import numpy as np

from chorus.audio.resample import SAMPLE_RATE

N_FFT = 400
WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 128
LOG_FLOOR = 1e-6


def num_frames(num_samples: int, hop_length: int = HOP_LENGTH) -> int:
    return num_samples // hop_length


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
    hz = np.asarray(hz, np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(hz < 1000.0, 3.0 * hz / 200.0,
                    15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mels < 15.0, 200.0 * mels / 3.0, 1000.0 * np.exp(log_step * (mels - 15.0)))


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(N_FFT // 2 + 1, N_MELS) float32 Slaney-normalized triangles over 0..8 kHz.

    Built here (not by librosa) so grain workers skip librosa's import cost; equal to
    librosa.filters.mel(sr=16000, n_fft=400, n_mels=128).T (tested)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # Slaney: equal area
    return np.ascontiguousarray(weights.T, dtype=np.float32)


@functools.lru_cache(maxsize=16)
def hann_window(length: int = WIN_LENGTH) -> np.ndarray:
    """Periodic Hann of `length` samples, librosa's `get_window("hann", fftbins=True)`."""
    n = np.arange(length)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _banded_filterbank() -> tuple[np.ndarray, np.ndarray]:
    """(N_MELS, W) FFT-bin indices and weights of each filter's nonzero band (zero-padded).

    Each triangle spans at most a handful of bins, so a gather + sum replaces the dense
    matmul: no BLAS call, whose threads thrash on a busy host (measured: 0.1 ms with one
    BLAS thread vs 12 ms with two on an oversubscribed 2-core machine)."""
    fb = mel_filterbank()
    nonzero = fb != 0
    lo = nonzero.argmax(axis=0)
    hi = fb.shape[0] - nonzero[::-1].argmax(axis=0)
    width = int((hi - lo).max())
    idx = np.minimum(lo[:, None] + np.arange(width)[None, :], fb.shape[0] - 1)
    weights = np.where(np.arange(width)[None, :] < (hi - lo)[:, None],
                       fb[idx, np.arange(N_MELS)[:, None]], 0.0).astype(np.float32)
    return idx, weights


def frame_indices(num_samples: int, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH
                  ) -> np.ndarray:
    """(num_samples // hop_length, n_fft) indices into the wave padded by n_fft // 2 on both
    sides: frame f is centred on sample f * hop_length."""
    starts = np.arange(num_frames(num_samples, hop_length)) * hop_length
    return starts[:, None] + np.arange(n_fft)[None, :]


def log_mel(wave: np.ndarray) -> np.ndarray:
    """(N,) float wave at 16 kHz -> (N // 160, 128) float32 log-mel."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"log_mel wave: expected shape (num_samples,), got {wave.shape}")
    padded = np.pad(wave, N_FFT // 2)
    frames = padded[frame_indices(len(wave))] * hann_window()
    spectrum = np.fft.rfft(frames, n=N_FFT, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    idx, weights = _banded_filterbank()
    mels = np.einsum("fmw,mw->fm", power[:, idx], weights)
    return np.log(np.maximum(mels, LOG_FLOOR)).astype(np.float32)
