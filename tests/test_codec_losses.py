"""The codec's stage objectives against NumPy / librosa references (float64, tight tolerances)
and the stage bundles the trainer gets (init shapes, exported trees)."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
from codec_fixtures import random_params, tiny_config
from test_ctc import _brute_force_nll

from chorus.audio import mel as host_mel
from chorus.codec import fsq, text
from chorus.codec.compile import fast_compile, jit
from chorus.codec.flow import FlowDecoder
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
    # Row 0 a pure tone (most bins under the 1e-5 log floor: the floor counts), row 1 a tone
    # in noise (no bin under it: the log magnitudes count).
    noise = 0.05 * np.random.default_rng(0).standard_normal(t.size)
    wave = np.stack([0.3 * np.sin(2 * np.pi * 180 * t),
                     0.3 * np.sin(2 * np.pi * 310 * t) + noise]).astype(np.float32)
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
    # fp32 in the loss vs float64 here: measured rel 1.2e-7 (mel L1), 3.5e-6 (STFT: the log of
    # magnitudes near the 1e-5 floor); the bounds are ~5x, far below any change of formula.
    assert float(parts["mel_l1"]) == pytest.approx(mel_l1, rel=2e-6)
    assert float(parts["stft"]) == pytest.approx(stft, rel=2e-5)
    assert float(loss) == pytest.approx(cfg.vocoder.mel_weight * mel_l1
                                        + cfg.vocoder.stft_weight * stft, rel=2e-5)


def _ctc_nll(logits: np.ndarray, labels) -> float:
    """-log p(labels | logits) by the CTC forward recursion over blank-interleaved labels
    (float64; blank = text.BLANK)."""
    logp = np.asarray(logits, np.float64)
    logp = logp - np.log(np.exp(logp - logp.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logp.max(-1, keepdims=True)
    ext = [text.BLANK]
    for c in labels:
        ext += [int(c), text.BLANK]
    alpha = np.full(len(ext), -np.inf)
    alpha[0] = logp[0, ext[0]]
    if len(ext) > 1:
        alpha[1] = logp[0, ext[1]]
    for t in range(1, logp.shape[0]):
        prev = alpha.copy()
        for s in range(len(ext)):
            terms = [prev[s]] + ([prev[s - 1]] if s >= 1 else [])
            if s >= 2 and ext[s] != text.BLANK and ext[s] != ext[s - 2]:
                terms.append(prev[s - 2])
            alpha[s] = np.logaddexp.reduce(terms) + logp[t, ext[s]]
    return -float(np.logaddexp.reduce(alpha[-2:]) if len(ext) > 1 else alpha[-1])


def test_ctc_forward_reference_is_the_sum_over_alignments():
    # The recursion above against every alignment (small enough to enumerate): a repeat
    # (needs a blank between), a single label, the empty label. The brute force sums in
    # float64 over log-probs from an fp32 log_softmax (x64 is off): agreement to ~3e-8.
    rng = np.random.default_rng(0)
    for labels, frames in (([1, 1], 4), ([2], 3), ([1, 2], 5), ([], 2)):
        logits = rng.normal(size=(frames, 3))
        assert _ctc_nll(logits, labels) == pytest.approx(
            float(_brute_force_nll(logits, frames, labels)), rel=1e-6)


def test_tokenizer_loss_matches_reference():
    # CTC per target character (valid codes only) + w * L1 over valid mel entries.
    cfg = tiny_config()
    model = CodecModels.build(cfg).tokenizer
    params = random_params(cfg, seed=4)["tokenizer"]
    rng = np.random.default_rng(1)
    mel_mask = np.ones((2, 32), np.float32)
    mel_mask[1, 24:] = 0.0  # row 1: 6 of 8 codes
    mel = (rng.normal(size=(2, 32, 128)) * mel_mask[..., None]).astype(np.float32)
    labels = np.asarray([[3, 3, 5, 0], [7, 2, 0, 0]], np.int32)  # a repeat in row 0
    label_mask = np.asarray([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
    batch = {"mel": mel, "mel_mask": mel_mask, "labels": labels, "label_mask": label_mask}
    weight = 0.7
    loss, parts = jit(lambda p, b: losses.tokenizer_loss(model, p, b, weight))(params, batch)
    codes, logits, rec = (np.asarray(x) for x in jit(
        lambda p, m, k: model.apply({"params": p}, m, k))(params, mel, mel_mask))
    n_codes, n_labels = (8, 6), (3, 2)
    ctc = np.mean([_ctc_nll(logits[b, :n_codes[b]], labels[b, :n_labels[b]]) / n_labels[b]
                   for b in range(2)])
    rec_l1 = np.sum(np.abs(rec.astype(np.float64) - mel) * mel_mask[..., None]) / (
        mel_mask.sum() * 128)
    indices = np.asarray(fsq.codes_to_indices(codes, cfg.fsq.levels))
    used = len({int(i) for b in range(2) for i in indices[b, :n_codes[b]]})
    # fp32 (optax's CTC, the jitted L1) vs float64: measured rel <= 5e-8; 1e-6 is a few fp32
    # ulps of headroom, and far below dropping the per-character division or a mask.
    assert float(parts["ctc"]) == pytest.approx(ctc, rel=1e-6)
    assert float(parts["rec_l1"]) == pytest.approx(rec_l1, rel=1e-6)
    assert float(loss) == pytest.approx(ctc + weight * rec_l1, rel=1e-6)
    assert float(parts["codes_used"]) == used


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_flow_loss_matches_reference(schedule):
    """OT-CFM by the docstring's formulas in float64, on the loss's own draws of t, noise and
    dropout (the same key splits), with the network evaluated at the reference's x_t."""
    cfg = tiny_config("experiment.flow.cond_dropout=0.5",
                      f"experiment.flow.time_schedule={schedule}",
                      "experiment.flow.prior_weight=0.3", "experiment.flow.sigma_min=0.05")
    fc = cfg.flow
    model = CodecModels.build(cfg).flow
    params = random_params(cfg, seed=5)["flow"]
    rng = np.random.default_rng(2)
    b, n = 4, 5
    mel_mask = np.ones((b, 4 * n), np.float32)
    mel_mask[2, 14:] = 0.0
    batch = {"mel": (rng.normal(size=(b, 4 * n, 128)) * mel_mask[..., None]).astype(np.float32),
             "mel_mask": mel_mask, "code_mask": mel_mask[:, ::4].copy(),
             "codes": rng.integers(0, cfg.fsq.num_codes, (b, n)).astype(np.int32),
             "speaker": rng.normal(size=(b, cfg.speaker.embed_dim)).astype(np.float32)}
    key = jax.random.PRNGKey(3)
    loss, parts = jit(lambda p, bt, k: losses.flow_loss(model, p, bt, k))(params, batch, key)

    k_t, k_noise, k_drop = jax.random.split(key, 3)
    u = np.asarray(jax.random.uniform(k_t, (b,)), np.float64)
    t = 1 - np.cos(u * np.pi / 2) if schedule == "cosine" else u
    noise = np.asarray(jax.random.normal(k_noise, batch["mel"].shape), np.float64)
    keep = (np.asarray(jax.random.uniform(k_drop, (b,))) >= 0.5).astype(np.float64)
    assert 0 < keep.sum() < b  # both conditioned and dropped rows in the batch
    apply = lambda method, *a: np.asarray(jit(lambda p, *x: model.apply(
        {"params": p}, *x, method=method))(params, *a), np.float64)
    mu = apply(FlowDecoder.condition, batch["codes"], batch["code_mask"], batch["speaker"])
    prior = apply(FlowDecoder.prior, mu.astype(np.float32))
    x1, s, tt = batch["mel"].astype(np.float64), fc.sigma_min, t[:, None, None]
    x0 = prior + fc.noise_scale * noise  # prior_start: x0 ~ N(prior, noise_scale^2)
    xt = (1 - (1 - s) * tt) * x0 + tt * x1
    v = apply(FlowDecoder.field, xt.astype(np.float32),
              (mu * keep[:, None, None]).astype(np.float32), t.astype(np.float32), mel_mask)
    m = mel_mask[..., None]
    fm = np.sum((v - (x1 - (1 - s) * x0)) ** 2 * m) / (m.sum() * 128)
    prior_mse = np.sum((prior - x1) ** 2 * m) / (m.sum() * 128)
    # fp32 in the loss vs float64 sums here: measured rel <= 7e-8; 1e-6 is a few fp32 ulps of
    # headroom (sigma_min = 0.05 makes the (1 - sigma) factors move the loss by ~5%).
    assert float(parts["fm_mse"]) == pytest.approx(fm, rel=1e-6)
    assert float(parts["prior_mse"]) == pytest.approx(prior_mse, rel=1e-6)
    assert float(loss) == pytest.approx(fm + 0.3 * prior_mse, rel=1e-6)


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

