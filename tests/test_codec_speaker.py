"""Speaker encoder: EER against a brute-force reference; two eSpeak voices are separated."""

import jax
import numpy as np
import optax
import pytest
from codec_fixtures import tiny_config

from chorus.codec.compile import fast_compile, jit
from chorus.codec.features import clip_log_mel, pad_batch
from chorus.codec.models import CodecModels, init_params
from chorus.codec.speaker import cosine, equal_error_rate, trial_scores
from data_pipelines.synthesis import synthesize
from experiments.codec.losses import init_classifier, speaker_loss


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    # These tests are compile-bound: XLA optimization level 0 halves their CPU time.
    with fast_compile():
        yield


def _reference_eer(scores, same):
    """Brute force, per threshold: accept = score >= th for th = +inf and every distinct score,
    highest first; FAR = share of impostors accepted, FRR = share of targets rejected. The
    crossing is the first th with FAR >= FRR: EER is FAR there if it is the first th or the
    two are equal, else where the straight lines through (FAR, FRR) of that th and of the one
    before meet. Returns (EER, that th)."""
    prev = None
    for th in [np.inf, *sorted(set(scores.tolist()), reverse=True)]:
        far = np.sum(scores[~same] >= th) / np.sum(~same)
        frr = np.sum(scores[same] < th) / np.sum(same)
        if far >= frr:
            if prev is None or far == frr:
                return far, th
            gap_before, gap = prev[1] - prev[0], far - frr  # > 0 and >= 0 on either side
            w = gap_before / (gap_before + gap)
            eer = prev[0] + w * (far - prev[0])
            assert eer == pytest.approx(prev[1] + w * (frr - prev[1]), abs=1e-12)  # FRR's line
            return eer, th
        prev = (far, frr)
    raise AssertionError("FAR reaches 1 at th = min score")


def test_eer_matches_reference_and_edge_cases():
    rng = np.random.default_rng(0)
    for trial in range(40):
        same = rng.random(200) < 0.3
        scores = rng.normal(size=200) + 1.2 * same
        if trial % 2:  # ties between target and impostor scores: accepted together
            scores = np.round(scores, 1)
        eer, threshold = equal_error_rate(scores, same)
        want_eer, want_threshold = _reference_eer(scores, same)
        # Exact up to float64 rounding of one interpolation; moving the threshold by one
        # sorted score moves FAR or FRR by >= 1/140 (about 60 targets, 140 impostors).
        assert eer == pytest.approx(want_eer, abs=1e-12)
        assert threshold == want_threshold
    same = np.asarray([True, True, False, False])
    assert equal_error_rate(np.asarray([0.9, 0.8, 0.1, 0.2]), same) == (0.0, 0.8)
    assert equal_error_rate(np.asarray([0.1, 0.2, 0.9, 0.8]), same)[0] == 1.0
    # Exactly determined case: one of two targets below one of two impostors -> 0.5 crossing.
    assert equal_error_rate(np.asarray([0.9, 0.3, 0.5, 0.1]), same) == (0.5, 0.5)
    # By hand, targets .9 .6 .4 and impostors .7 .5 .3 .2 .1: at th = .6 FAR 1/5 < FRR 1/3,
    # at th = .5 FAR 2/5 > FRR 1/3; the lines meet 2/3 of the way: EER = 1/5 + 2/3 * 1/5.
    scores = np.asarray([0.9, 0.6, 0.4, 0.7, 0.5, 0.3, 0.2, 0.1])
    eer, threshold = equal_error_rate(scores, np.arange(8) < 3)
    assert eer == pytest.approx(1 / 3, abs=1e-12) and threshold == 0.5
    with pytest.raises(ValueError, match="expected target and impostor trials"):
        equal_error_rate(np.asarray([0.1, 0.2]), np.asarray([True, True]))


def test_trial_scores_are_all_pairs():
    emb = np.eye(3)[[0, 0, 1]]
    scores, same = trial_scores(emb, ["a", "a", "b"])
    np.testing.assert_allclose(scores, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(same, [True, False, False])
    assert cosine(np.asarray([3.0, 4.0]), np.asarray([6.0, 8.0])) == pytest.approx(1.0)


def test_speaker_encoder_separates_two_voices():
    cfg = tiny_config("experiment.speaker.crop_frames=80")
    voices = ("en-gb+m1", "en-gb+f2")
    train_texts = ["the red cat sleeps", "a big dog runs home", "we like green apples",
                   "my friend reads a letter"]
    test_texts = ["the old ship waits near the island", "anna paints a quiet garden"]
    mels, labels = [], []
    for v, voice in enumerate(voices):
        for t in train_texts:
            mels.append(clip_log_mel(synthesize(t, voice)[0], cfg.mel))
            labels.append(v)
    norm = [cfg.mel.normalize(m) for m in mels]
    models = CodecModels.build(cfg)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {"speaker": init_params(models, cfg, "speaker", k1),
              "classifier": init_classifier(k2, 2, cfg.speaker.embed_dim)}
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s, batch):
        (loss, _), g = jax.value_and_grad(lambda q: speaker_loss(models.speaker, q, batch),
                                          has_aux=True)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    # Held-out sentences of both voices, embedded before and after training.
    embed = jit(lambda p, m, k: models.speaker.apply({"params": p}, m, k))
    held_out, who = [], []
    for voice in voices:
        for t in test_texts:
            m = cfg.mel.normalize(clip_log_mel(synthesize(t, voice)[0], cfg.mel))
            held_out.append(pad_batch([m], 400))
            who.append(voice)

    def trials(p):
        emb = np.stack([np.asarray(embed(p["speaker"], mel, mask))[0] for mel, mask in held_out])
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        return trial_scores(emb, who)

    # The untrained encoder does not separate them (measured EER 0.5, every cosine > 0.95):
    # what separates them below is training.
    scores, same = trials(params)
    assert equal_error_rate(scores, same)[0] >= 0.25, scores
    rng = np.random.default_rng(0)
    for _ in range(40):
        idx = rng.integers(0, len(norm), 8)
        crops = []
        for i in idx:
            start = int(rng.integers(0, max(norm[i].shape[0] - 80, 0) + 1))
            crops.append(norm[i][start:start + 80])
        mel, mask = pad_batch(crops, 80)
        params, state, loss = step(params, state, {"mel": mel, "mel_mask": mask,
                                                   "speaker": np.asarray(labels)[idx]})
    # Every same-voice pair beats every cross-voice pair, by a wide margin: measured target
    # cosines >= 0.92 and impostor cosines <= -0.35 after 40 steps (one step already gives
    # EER 0, with 0.969 vs 0.958: EER alone is no evidence of learning).
    scores, same = trials(params)
    assert equal_error_rate(scores, same)[0] == 0.0
    assert scores[same].min() > 0.8 and scores[~same].max() < 0.3, (scores, same)
