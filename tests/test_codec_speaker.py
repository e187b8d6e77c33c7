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
    """Brute force: every threshold between sorted scores; EER where |FAR - FRR| is smallest,
    taken as the mean of FAR and FRR there (the two agree at a crossing)."""
    best = None
    cands = np.concatenate([[np.inf], np.sort(scores)[::-1], [-np.inf]])
    for th in cands:
        accept = scores >= th
        far = np.mean(accept[~same])
        frr = np.mean(~accept[same])
        if best is None or abs(far - frr) < best[0]:
            best = (abs(far - frr), (far + frr) / 2)
    return best[1]


def test_eer_matches_reference_and_edge_cases():
    rng = np.random.default_rng(0)
    for _ in range(20):
        same = rng.random(200) < 0.3
        scores = rng.normal(size=200) + 1.2 * same
        eer, _ = equal_error_rate(scores, same)
        assert eer == pytest.approx(_reference_eer(scores, same), abs=0.02)
    same = np.asarray([True, True, False, False])
    assert equal_error_rate(np.asarray([0.9, 0.8, 0.1, 0.2]), same)[0] == 0.0
    assert equal_error_rate(np.asarray([0.1, 0.2, 0.9, 0.8]), same)[0] == 1.0
    # Exactly determined case: one of two targets below one of two impostors -> 0.5 crossing.
    assert equal_error_rate(np.asarray([0.9, 0.3, 0.5, 0.1]), same)[0] == pytest.approx(0.5)
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
    # Held-out sentences of both voices: every same-voice pair beats every cross-voice pair.
    embed = jit(lambda p, m, k: models.speaker.apply({"params": p}, m, k))
    emb, who = [], []
    for voice in voices:
        for t in test_texts:
            m = cfg.mel.normalize(clip_log_mel(synthesize(t, voice)[0], cfg.mel))
            mel, mask = pad_batch([m], 400)
            emb.append(np.asarray(embed(params["speaker"], mel, mask))[0])
            who.append(voice)
    scores, same = trial_scores(np.stack(emb), who)
    assert scores[same].min() > scores[~same].max(), (scores, same)
    assert equal_error_rate(scores, same)[0] == 0.0
    np.testing.assert_allclose(np.linalg.norm(np.stack(emb), axis=1), 1.0, atol=1e-5)
