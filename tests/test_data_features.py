"""Log-mel (NumPy and JAX) against librosa, SpecAugment, waveform augmentation."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from chorus.audio import mel, mel_jax, spec_augment
from data_pipelines import augment

# Max |difference| of log-mel values (natural log, floor 1e-6) against librosa in fp32.
LOG_MEL_ATOL = 5e-4


def _test_wave(seconds=1.37, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    chirp = 0.4 * np.sin(2 * np.pi * (150 + 900 * t) * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    wave = chirp + 0.02 * rng.standard_normal(len(t))
    wave[: len(t) // 5] = 0.0  # exact silence: exercises the log floor
    return wave.astype(np.float32)


def _librosa_log_mel(wave):
    power = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=400, hop_length=160,
                                           win_length=400, window="hann", center=True,
                                           pad_mode="constant", power=2.0, n_mels=128)
    return np.log(np.maximum(power.T[: len(wave) // 160], mel.LOG_FLOOR))


def test_filterbank_matches_librosa():
    ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=128, htk=False, norm="slaney").T
    np.testing.assert_allclose(mel.mel_filterbank(), ref, rtol=1e-5, atol=1e-8)


def test_numpy_log_mel_matches_librosa():
    wave = _test_wave()
    feats = mel.log_mel(wave)
    assert feats.shape == (len(wave) // 160, 128) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, _librosa_log_mel(wave), atol=LOG_MEL_ATOL, rtol=0)


def test_jax_log_mel_matches_librosa_and_numpy_under_jit():
    waves = np.stack([_test_wave(seed=0), _test_wave(seed=1)])  # batched: (2, N)
    feats = np.asarray(jax.jit(mel_jax.log_mel)(waves))
    assert feats.shape == (2, waves.shape[1] // 160, 128)
    for i in range(2):
        np.testing.assert_allclose(feats[i], _librosa_log_mel(waves[i]), atol=LOG_MEL_ATOL,
                                   rtol=0)
        np.testing.assert_allclose(feats[i], mel.log_mel(waves[i]), atol=LOG_MEL_ATOL, rtol=0)


def test_padded_batch_features_equal_unpadded_on_valid_frames():
    short = _test_wave(seconds=0.8)
    padded = np.zeros(16000, np.float32)
    padded[: len(short)] = short
    feats = np.asarray(mel_jax.log_mel(padded[None]))[0]
    mask = np.asarray(mel_jax.frame_mask(np.array([len(short)]), feats.shape[0]))[0]
    assert mask.sum() == len(short) // 160 and mask[: mask.sum()].all()
    np.testing.assert_allclose(feats[mask], mel.log_mel(short), atol=LOG_MEL_ATOL, rtol=0)


def test_spec_augment_masks_only_valid_frames():
    feats = jnp.asarray(np.random.default_rng(0).standard_normal((3, 2, 96, 128)), jnp.float32)
    lengths = np.array([[96, 40], [10, 0], [64, 96]])
    mask = jnp.arange(96) < jnp.asarray(lengths)[..., None]
    config = spec_augment.SpecAugmentConfig(num_freq_masks=2, max_freq_width=20,
                                            num_time_masks=2, max_time_fraction=0.2)
    augment_fn = jax.jit(spec_augment.spec_augment, static_argnums=3)
    out = np.asarray(augment_fn(jax.random.key(1), feats, mask, config))
    again = np.asarray(augment_fn(jax.random.key(1), feats, mask, config))
    np.testing.assert_array_equal(out, again)  # deterministic in the key
    changed = out != np.asarray(feats)
    np.testing.assert_array_equal(changed & ~np.asarray(mask)[..., None], False)
    assert changed.any()
    f, m = np.asarray(feats), np.asarray(mask)
    for b in range(3):
        for a in range(2):
            n = lengths[b, a]
            if n == 0:
                continue
            clip_mean = f[b, a, :n].mean()
            np.testing.assert_allclose(out[b, a][changed[b, a]], clip_mean, rtol=1e-5)
            # Masked cells form whole frequency columns / time rows inside the valid prefix.
            cells = changed[b, a, :n]
            full_cols = cells.all(axis=0)
            full_rows = cells.all(axis=1)
            np.testing.assert_array_equal(cells, full_cols[None, :] | full_rows[:, None])
            assert full_cols.sum() <= 2 * 20
            assert full_rows.sum() <= 2 * int(0.2 * n) or full_cols.all()
            assert m[b, a, :n].all()


def test_spec_augment_without_masks_is_identity():
    feats = jnp.ones((2, 16, 128))
    mask = jnp.ones((2, 16), bool)
    config = spec_augment.SpecAugmentConfig(num_freq_masks=0, num_time_masks=0)
    np.testing.assert_array_equal(spec_augment.spec_augment(jax.random.key(0), feats, mask,
                                                            config), feats)


def test_waveform_augmentation():
    wave = _test_wave(seconds=1.0)
    assert len(augment.change_speed(wave, 1.25)) == 12800
    assert len(augment.change_speed(wave, 0.8)) == 20000
    np.testing.assert_array_equal(augment.change_speed(wave, 1.0), wave)
    rng = np.random.default_rng(0)
    noisy = augment.add_noise(wave, snr_db=20.0, rng=rng)
    noise = noisy - wave
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise ** 2))
    assert abs(snr - 20.0) < 0.5
    config = augment.AugmentConfig(speed_range=(0.9, 1.1), gain_db_range=(-6, -6),
                                   noise_snr_db_range=(30, 30))
    a = augment.augment(wave, config, np.random.default_rng(5))
    b = augment.augment(wave, config, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert 0.9 * 16000 / 1.1 <= len(a) <= 1.1 * 16000 / 0.9
    quiet = augment.augment(wave, augment.AugmentConfig(gain_db_range=(-6, -6)),
                            np.random.default_rng(0))
    np.testing.assert_allclose(quiet, wave * 10 ** (-6 / 20), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="speed_range"):
        augment.AugmentConfig(speed_range=(1.2, 0.8))
