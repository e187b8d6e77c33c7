"""Adversarial ASR: the fine-tuning option of the ASR experiment (experiment.adversarial, PGD on
the training log-mel inside AsrModel.loss_fn) and the attacks of experiments/asr/adversarial.py
on a tiny model."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from asr_runs import ASR, RUN, sets

from chorus.analysis.attacks import PGDConfig
from chorus.audio import mel_jax
from chorus.config import Config, ConfigError, load_config
from experiments.asr import build
from experiments.asr.adversarial import attack_log_mel, attack_wave, transcribe
from experiments.asr.model import AsrModel
from experiments.asr.regime import eval_examples
from experiments.asr.scoring import transcript_scorer
from experiments.asr.settings import asr_settings

# log-mel values reach |x| ~ 20: float32 rounding of x +- eps is within half an ulp (1e-6)
FEATURE_TOL = 4e-6


def _config(corpus, *overrides):
    return load_config("cpu-tiny", ASR + [f"experiment.data_dir={corpus}",
                                          "experiment.mtp.num_heads=2", *overrides])


@pytest.fixture(scope="module")
def setup(tiny_asr_corpus):
    """(config, AsrModel, params, a training batch) of a random-initialized tiny model."""
    config = _config(tiny_asr_corpus, "experiment.spec_augment=null", "experiment.mtp=null",
                     "experiment.ctc_weight=0")
    asr = AsrModel.build(config, asr_settings(config))
    params = nn.meta.unbox(jax.jit(asr.init_fn(config))(jax.random.key(0)))
    batch = next(build(config).train_iterator(0, 1, 0))
    # two rows (each packs clips and padding) keep the runs short
    return config, asr, params, jax.tree.map(lambda x: jnp.asarray(x[:2]), batch)


def _with(asr, **changes):
    return dataclasses.replace(asr, **changes)


def test_settings_switch_it_on_from_null_and_name_bad_fields(tiny_asr_corpus):
    assert asr_settings(_config(tiny_asr_corpus)).adversarial is None
    on = asr_settings(_config(tiny_asr_corpus, "experiment.adversarial.epsilon=0.25",
                              "experiment.adversarial.steps=2"))
    assert on.adversarial == PGDConfig(epsilon=0.25, steps=2) and on.adversarial_weight == 0.5
    for override, message in [
            ("experiment.adversarial.epsilon=-1", r"pgd.epsilon: expected a finite number"),
            ("experiment.adversarial.epsilon=big", r"experiment.adversarial.epsilon: expected a "),
            ("experiment.adversarial.stepz=2", r"experiment.adversarial: unknown field\(s\) "
                                               r"\['stepz'\]"),
            ("experiment.adversarial.steps=2", r"experiment.adversarial: .*'epsilon'"),
            ("experiment.adversarial_weight=1.5", r"experiment.adversarial_weight: expected a "
                                                  r"number in \[0, 1\]")]:
        with pytest.raises(ConfigError, match=message):
            asr_settings(_config(tiny_asr_corpus, override))


def test_no_perturbation_gives_the_clean_loss(setup):
    config, asr, params, batch = setup
    clean = jax.jit(asr.loss_fn(augment=False))(params, batch, jax.random.key(1))
    for adversarial, weight in [(PGDConfig(epsilon=0.3, steps=0, random_start=False), 1.0),
                                (PGDConfig(epsilon=0.0, steps=2), 0.5)]:
        model = _with(asr, adversarial=adversarial, adversarial_weight=weight)
        loss, metrics = jax.jit(model.loss_fn(augment=True))(params, batch, jax.random.key(1))
        # the same computation on the same features (w * l + (1 - w) * l = l exactly for
        # w = 0.5); 1e-6 leaves room for XLA fusing the two passes differently
        np.testing.assert_allclose(float(loss), float(clean[0]), rtol=1e-6)
        np.testing.assert_allclose(float(metrics["adv/ce"]), float(clean[1]["ce"]), rtol=1e-6)
        assert float(metrics["adv/linf"]) == 0.0


def test_the_perturbation_stays_in_the_ball_and_off_the_padding(setup):
    _, asr, params, batch = setup
    eps = 0.5
    model = _with(asr, adversarial=PGDConfig(epsilon=eps, steps=3))
    adv = jax.jit(model.perturb)(params["backbone"], batch, jax.random.key(2))
    d = np.abs(np.asarray(adv["audio_features"] - batch["audio_features"]))
    valid = np.asarray(batch["audio_mask"])
    assert (~valid).any() and valid.any()
    assert d.max() <= eps + FEATURE_TOL
    assert d[~valid].max() == 0.0  # padded frames never move
    assert np.median(d[valid]) > eps / 2  # and the valid ones do
    nll = jax.jit(model.transcript_nll)
    clean, attacked = nll(params["backbone"], batch), nll(params["backbone"], adv)
    # the ascent raises the summed transcript CE of every row that has a transcript
    rows = np.asarray(batch["loss_mask"]).sum(-1) > 0
    assert np.all(np.asarray(attacked)[rows] > np.asarray(clean)[rows])


def test_adversarial_loss_is_above_the_clean_one_and_its_gradient_skips_the_attack(setup):
    _, asr, params, batch = setup
    model = _with(asr, adversarial=PGDConfig(epsilon=0.5, steps=3), adversarial_weight=1.0)
    key = jax.random.key(3)
    train = jax.value_and_grad(lambda p: model.loss_fn(augment=True)(p, batch, key),
                               has_aux=True)
    (loss, metrics), grad = jax.jit(train)(params)
    assert float(metrics["adv/ce"]) > float(metrics["ce"])
    np.testing.assert_allclose(float(loss), float(metrics["adv/loss"]), rtol=1e-6)  # w = 1
    # Danskin: the params' gradient is that of the loss at the fixed adversarial features
    # (no gradient through the PGD loop nor through the metrics-only clean pass)
    adv = jax.jit(model.perturb)(params["backbone"], batch, jax.random.fold_in(key, 1))
    ref = jax.jit(jax.grad(lambda p: asr.loss_fn()(p, adv, key)[0]))(params)
    for g, r in zip(jax.tree.leaves(grad), jax.tree.leaves(ref), strict=True):
        # the same float32 computation traced twice: fusion-order differences only
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def adv_run(tiny_asr_corpus, tmp_path_factory):
    """A 2-step adversarial `chorus train --experiment asr` run and its metrics rows."""
    from chorus.training.cli import train_main

    workdir = tmp_path_factory.mktemp("asr_adv")
    assert train_main(["--experiment", "asr", "--workdir", str(workdir), "--data",
                       tiny_asr_corpus, "--quiet",
                       *sets(*RUN, "train.steps=2", "experiment.adversarial.epsilon=0.1",
                             "experiment.adversarial.steps=2")]) == 0
    with open(workdir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f if '"event"' not in line]
    return workdir, rows


@pytest.mark.slow  # a 2-step training run: ~25 s, mostly compiling the adversarial step
def test_cli_trains_adversarially_with_finite_losses(adv_run):
    workdir, rows = adv_run
    assert len(rows) == 2
    for row in rows:
        assert np.isfinite(row["loss"]) and np.isfinite(row["adv/ce"])
        assert row["adv/ce"] > row["ce"]
        assert 0 < row["adv/linf"] <= 0.1 + FEATURE_TOL
    # the run's config round-trips the setting (restores build the same loss)
    saved = Config.from_json((workdir / "config.json").read_text())
    assert asr_settings(saved).adversarial == PGDConfig(epsilon=0.1, steps=2)


@pytest.fixture(scope="module")
def attack_setup(tiny_asr_run, tiny_asr_corpus):
    """(transcriber, two test-split eval examples) of the suite's shared 3-step ASR run."""
    from experiments.asr.transcriber import load_transcriber

    transcriber, run = load_transcriber(str(tiny_asr_run))
    settings = dataclasses.replace(asr_settings(run.config), data_dir=tiny_asr_corpus)
    return transcriber, eval_examples(run.config, settings, "test", 2)


def _clip(example):
    feats = np.asarray(example["audio_features"])[0]
    return feats[np.asarray(example["audio_mask"])[0]]


def _scorers(transcriber, ex, other):
    t = len(_clip(ex))
    return (transcript_scorer(transcriber.asr.backbone, transcriber.layout, t, x["reference_ids"])
            for x in (ex, other))


def test_untargeted_attack_lowers_the_reference_log_prob(attack_setup):
    transcriber, (ex, other) = attack_setup
    backbone = transcriber.params["backbone"]
    score, _ = _scorers(transcriber, ex, other)
    batch = np.stack([_clip(ex)] * 2)  # two random starts of one clip
    down = attack_log_mel(score, backbone, batch, PGDConfig(epsilon=1.0, steps=4),
                          jax.random.key(4))
    assert np.all(down.reference_after < down.reference_before)
    assert down.target_before is None
    assert np.abs(np.asarray(down.inputs) - batch).max() <= 1.0 + FEATURE_TOL
    np.testing.assert_allclose(down.reference_before, score(backbone, batch),
                               rtol=1e-5)  # float32 sums of the same forward
    with pytest.raises(ValueError, match=r"attack_log_mel features: expected \[B, "):
        attack_log_mel(score, backbone, batch[:, :-1], PGDConfig(1.0), jax.random.key(4))


def test_targeted_attack_raises_the_target_log_prob(attack_setup):
    transcriber, (ex, other) = attack_setup
    score, target = _scorers(transcriber, ex, other)
    batch = np.stack([_clip(ex)] * 2)
    up = attack_log_mel(score, transcriber.params["backbone"], batch,
                        PGDConfig(epsilon=1.0, steps=4), jax.random.key(4), target_scorer=target)
    assert np.all(up.target_after > up.target_before)
    assert up.reference_after.shape == (2,)


def test_transcribe_is_each_clips_greedy_transcript(attack_setup):
    transcriber, (ex, _) = attack_setup
    rng = np.random.default_rng(0)
    clip = _clip(ex)
    feats = np.stack([clip, clip + rng.normal(0, 2.0, clip.shape).astype(np.float32)])
    texts = transcribe(transcriber, feats)
    alone = [transcriber.texts(transcriber.decode(transcriber.request(f), "greedy"))[0]
             for f in feats]
    assert texts == alone and len(texts) == 2


def test_waveform_attack_stays_in_the_ball_and_in_range(attack_setup):
    transcriber, (ex, _) = attack_setup
    backbone, layout = transcriber.params["backbone"], transcriber.layout
    n = 160 * 90 + 37  # 90 frames; the tail of a frame is part of the clip
    time = np.arange(n) / 16_000
    # a loud tone clipped at +-1, so the range constraint binds
    wave = np.clip(1.5 * np.sin(2 * np.pi * 220 * time), -1, 1)
    waves = np.stack([wave, 0.3 * wave]).astype(np.float32)
    score = transcript_scorer(transcriber.asr.backbone, layout, 90, ex["reference_ids"])
    eps = 0.002
    out = attack_wave(score, backbone, waves, PGDConfig(epsilon=eps, steps=3),
                      jax.random.key(5))
    adv = np.asarray(out.inputs)
    assert np.abs(adv - waves).max() <= eps + 1e-7  # |x| <= 1: half an ulp is 6e-8
    assert adv.min() >= -1.0 and adv.max() <= 1.0
    assert np.all(out.reference_after < out.reference_before)
    np.testing.assert_array_equal(np.asarray(out.features),
                                  np.asarray(jax.jit(mel_jax.log_mel)(out.inputs)))
    with pytest.raises(ValueError, match=r"attack_wave waves: expected \[B, N\] with N // 160"):
        attack_wave(score, backbone, waves[:, :-200], PGDConfig(epsilon=eps), jax.random.key(5))
