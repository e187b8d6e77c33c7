"""FSQ quantizer and the codec's frame-rate arithmetic, against plain numpy references."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chorus.codec import fsq
from chorus.codec.compile import fast_compile
from chorus.codec.config import CodecConfig, FSQConfig
from chorus.config import ConfigError, load_config, settings_from
from chorus.vocab import CODEC_FRAMES_PER_SECOND
from experiments.codec.settings import CodecSettings, read_settings


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    # These tests are compile-bound: XLA optimization level 0 halves their CPU time.
    with fast_compile():
        yield


def _reference_digits(z: np.ndarray, levels) -> np.ndarray:
    """FSQ by the paper's recipe in float64: bound each channel, round, shift to 0..L-1."""
    out = []
    for c, lv in enumerate(levels):
        half = (lv - 1) * (1 + 1e-3) / 2
        offset = 0.5 if lv % 2 == 0 else 0.0
        bounded = np.tanh(z[..., c] + np.arctanh(offset / half)) * half - offset
        out.append(np.round(bounded).astype(np.int64) + lv // 2)
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (3,) * 8, (9, 9, 9, 9), (2, 4)])
def test_index_round_trip_covers_codebook(levels):
    n = math.prod(levels)
    idx = jnp.arange(n)
    codes = fsq.indices_to_codes(idx, levels)
    assert codes.shape == (n, len(levels))
    assert float(jnp.max(jnp.abs(codes))) <= 1.0
    np.testing.assert_array_equal(np.asarray(fsq.codes_to_indices(codes, levels)), np.arange(n))
    # Every code vector is distinct: the implicit codebook has prod(levels) entries.
    assert len({tuple(row) for row in np.asarray(codes).round(4)}) == n


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (3,) * 8])
def test_quantize_matches_reference(levels):
    z = np.random.default_rng(0).normal(scale=2.0, size=(64, len(levels))).astype(np.float32)
    codes = fsq.quantize(jnp.asarray(z), levels)
    digits = _reference_digits(z.astype(np.float64), levels)
    lv = np.asarray(levels)
    assert (digits >= 0).all() and (digits < lv).all()
    np.testing.assert_allclose(np.asarray(codes), (digits - lv // 2) / (lv // 2), atol=1e-6)
    basis = np.cumprod([1, *levels[:-1]])
    np.testing.assert_array_equal(np.asarray(fsq.codes_to_indices(codes, levels)),
                                  (digits * basis).sum(-1))
    # Decoding the indices gives back exactly the quantized vectors.
    np.testing.assert_allclose(np.asarray(fsq.indices_to_codes(
        fsq.codes_to_indices(codes, levels), levels)), np.asarray(codes), atol=1e-6)


def test_every_level_is_reachable():
    levels = (8, 5, 3)
    z = jnp.linspace(-6, 6, 2001)[:, None] * jnp.ones((1, 3))
    digits = np.asarray(fsq.codes_to_indices(fsq.quantize(z, levels), levels))
    assert len(np.unique(digits)) >= 8  # the 8-level channel sweeps all of its values
    for c, lv in enumerate(levels):
        ch = np.round(np.asarray(fsq.quantize(z, levels))[:, c] * (lv // 2)).astype(int)
        assert sorted(set(ch)) == list(range(-(lv // 2), lv - lv // 2))


def test_straight_through_gradient():
    levels = (8, 5, 5, 5)
    z = jax.random.normal(jax.random.PRNGKey(0), (16, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (16, 4))
    scale = jnp.asarray([4.0, 2.0, 2.0, 2.0])
    g_ste = jax.grad(lambda z: jnp.sum(fsq.quantize(z, levels) * w))(z)
    g_ref = jax.grad(lambda z: jnp.sum(fsq.bound(z, levels) / scale * w))(z)
    np.testing.assert_allclose(np.asarray(g_ste), np.asarray(g_ref), rtol=1e-6, atol=1e-7)
    assert float(jnp.abs(g_ste).sum()) > 0


def test_codebook_matches_the_backbone_and_rate():
    # The default codec speaks the cpu-tiny backbone's 1000 codes; another backbone is refused
    # with an error naming both sides until the levels are set to its codebook.
    settings = read_settings(load_config("cpu-tiny"))
    assert settings.fsq.num_codes == 1000 == load_config("cpu-tiny").model.num_audio_codes
    with pytest.raises(ConfigError, match=r"experiment.fsq.levels: expected levels whose "
                       r"product is model.num_audio_codes=6561.*got \[8, 5, 5, 5\] = 1000"):
        read_settings(load_config("gpu-1b"))
    big = read_settings(load_config("gpu-1b", ["experiment.fsq.levels=[3,3,3,3,3,3,3,3]"]))
    assert big.fsq.num_codes == 6561 == 3**8
    cfg = settings.mel
    # 100 Hz mel, 4 frames per code -> 25 codes per second -> 640 samples per code at 16 kHz.
    assert cfg.sample_rate // cfg.hop_length == 100
    assert cfg.frames_per_code == 4
    assert cfg.sample_rate / cfg.samples_per_code == CODEC_FRAMES_PER_SECOND == 25


def test_settings_validation_names_the_field():
    with pytest.raises(ConfigError, match=r"fsq.levels\[1\]: expected an int >= 2, got 1"):
        FSQConfig(levels=(8, 1))
    with pytest.raises(ConfigError, match="mel.hop_length"):
        CodecConfig.from_experiment({"mel": {"hop_length": 256}})
    with pytest.raises(ConfigError, match=r"experiment.flow: unknown field\(s\) \['no_such'\]"):
        CodecConfig.from_experiment({"flow": {"no_such": 1}})
    with pytest.raises(ConfigError, match="flow.guidance"):
        CodecConfig.from_experiment({"flow": {"guidance": -1.0}})
    with pytest.raises(ConfigError, match=r"experiment.heldout_voices\[1\]: expected a "
                       r"data_pipelines.voices name"):
        settings_from(CodecSettings, {"heldout_voices": ["en-gb+m1", "en+nobody"]})
    with pytest.raises(ConfigError, match=r"experiment: unknown field\(s\) \['corpus'\]"):
        settings_from(CodecSettings, {"corpus": {"voices": []}})
    with pytest.raises(ConfigError, match=r"experiment.train.flow.steps: expected an int"):
        settings_from(CodecSettings, {"train": {"flow": {"steps": "many"}}})
    # Partial sections merge over the defaults; the codec part is a plain CodecConfig.
    s = settings_from(CodecSettings, {"flow": {"dim": 48}, "train": {"flow": {"steps": 7}},
                                      "module": "codec"})
    assert (s.flow.dim, s.flow.kernel_size, s.train.flow.steps, s.train.flow.batch_size) == (
        48, 5, 7, 16)
    assert s.codec == CodecConfig.from_experiment({"flow": {"dim": 48}, "stage": "flow"})
    assert s.schedule("flow").overrides()[:2] == ("train.steps=7", "train.batch_size=16")


def test_level_products():
    for levels in itertools.product((2, 3, 5), repeat=2):
        assert FSQConfig(levels=levels).num_codes == levels[0] * levels[1]
