"""The codec's stage objectives against NumPy / librosa references (float64, tight tolerances)
and the stage bundles the trainer gets (init shapes, exported trees)."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
from codec_fixtures import random_params, tiny_config

from chorus.audio import mel as host_mel
from chorus.codec.compile import fast_compile, jit
from chorus.codec.models import CodecModels
from experiments.codec import losses


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    with fast_compile():
        yield


def test_cosface_matches_reference():
    cfg = tiny_config()
    model = CodecModels.build(cfg).speaker
    rng = np.random.default_rng(0)
    params = {"speaker": random_params(cfg)["speaker"],
              "classifier": rng.normal(size=(5, cfg.speaker.embed_dim)).astype(np.float32)}
    batch = {"mel": rng.normal(size=(4, 40, 128)).astype(np.float32),
             "mel_mask": np.ones((4, 40), np.float32), "speaker": np.asarray([0, 3, 3, 1])}
    loss, metrics = jit(lambda p, b: losses.speaker_loss(model, p, b))(params, batch)
    emb = np.asarray(model.apply({"params": params["speaker"]}, batch["mel"],
                                 batch["mel_mask"]), np.float64)
    w = params["classifier"].astype(np.float64)
    cos = emb @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    logits = cfg.speaker.scale * (cos - cfg.speaker.margin * np.eye(5)[batch["speaker"]])
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ref = -np.mean(log_p[np.arange(4), batch["speaker"]])
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    assert float(metrics["acc"]) == np.mean(cos.argmax(1) == batch["speaker"])


def _magnitudes(waves: np.ndarray, n_fft: int) -> np.ndarray:
    """|STFT| with frames centred on f * hop, N // hop of them (librosa, float64)."""
    hop = n_fft // 4
    spec = librosa.stft(waves.astype(np.float64), n_fft=n_fft, hop_length=hop, center=True,
                        pad_mode="constant")
    return np.abs(spec)[..., :waves.shape[-1] // hop]


def test_vocoder_loss_matches_reference():
    cfg = tiny_config()
    model = CodecModels.build(cfg).vocoder
    params = random_params(cfg, seed=3)["vocoder"]
    t = np.arange(cfg.vocoder.segment_frames * 160) / 16000
    wave = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (180, 310)]).astype(np.float32)
    loss, parts = jit(lambda p, w: losses.vocoder_loss(model, p, {"wave": w}, cfg.mel))(
        params, wave)
    target = np.stack([host_mel.log_mel(w) for w in wave])
    pred = np.asarray(model.apply({"params": params}, cfg.mel.normalize(jnp.asarray(target)),
                                  jnp.ones(target.shape[:2])))
    mel_l1 = np.mean(np.abs(np.stack([host_mel.log_mel(p) for p in pred]) - target))
    sc, mag = 0.0, 0.0
    for n_fft in cfg.vocoder.stft_resolutions:
        ref, hyp = _magnitudes(wave, n_fft), _magnitudes(pred, n_fft)
        sc += np.sqrt(np.sum((ref - hyp) ** 2) / np.sum(ref**2))
        mag += np.mean(np.abs(np.log(np.maximum(ref, 1e-5)) - np.log(np.maximum(hyp, 1e-5))))
    stft = (sc + mag) / len(cfg.vocoder.stft_resolutions)
    assert float(parts["mel_l1"]) == pytest.approx(mel_l1, rel=1e-3)
    assert float(parts["stft"]) == pytest.approx(stft, rel=1e-3)
    assert float(loss) == pytest.approx(cfg.vocoder.mel_weight * mel_l1
                                        + cfg.vocoder.stft_weight * stft, rel=1e-3)


def test_distinct_codes_counts_valid_positions():
    indices = jnp.asarray([[3, 3, 7, 1], [7, 9, 9, 2]])
    mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)
    assert float(losses.distinct_codes(indices, mask, 10)) == len({3, 7, 9})


def params_shape(objective):
    tree = jax.eval_shape(objective.init_fn, jax.random.PRNGKey(0))
    return jax.tree.map(lambda x: x.shape, tree)


def test_stage_objectives_export_the_network_alone():
    cfg = tiny_config()
    for stage in ("speaker", "tokenizer", "flow", "vocoder"):
        objective = losses.objective(stage, cfg, speaker_classes=7)
        params = jax.eval_shape(objective.init_fn, jax.random.PRNGKey(0))
        expected = {stage, "classifier"} if stage == "speaker" else {stage}
        assert set(params) == expected
        assert set(objective.export_params(params)) == {stage}
    assert params_shape(losses.objective("speaker", cfg, 7))["classifier"] == (
        7, cfg.speaker.embed_dim)
    with pytest.raises(ValueError, match="experiment.stage: expected one of"):
        losses.objective("nope", cfg, 7)

