"""The codec's four training objectives, one per stage: pure (params, batch, rng) functions.

    stage      params                       batch                                    loss
    speaker    {"speaker", "classifier"}    mel crops + mask, speaker label          CosFace
    tokenizer  {"tokenizer"}                utterance mel + mask, CTC labels + mask  CTC / chars
                                                                                     + w * mel L1
    flow       {"flow"}                     mel crop + mask, its codes + mask, the   OT-CFM MSE
                                            utterance's speaker embedding            + w * prior MSE
    vocoder    {"vocoder"}                  waveform crops                           mel L1 +
                                                                                     multi-res STFT

Mels in batches are normalized (`MelConfig.normalize`); the vocoder computes its input mel
from the waveform inside the step. `objective(stage, cfg, speaker_classes)` bundles a stage's
init_fn / loss_fn / export_params for the trainer; export_params gives the stage's network
as `{name: params}` (the speaker stage drops its training-only classifier), which is what
`chorus.codec.pipeline.Codec.load` reads back from each stage run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from chorus.audio import mel_jax
from chorus.codec import fsq, text
from chorus.codec.config import CodecConfig, MelConfig
from chorus.codec.flow import FlowDecoder, start_point
from chorus.codec.layers import masked_mean
from chorus.codec.models import NETWORKS, CodecModels, init_params
from chorus.codec.speaker import SpeakerEncoder
from chorus.codec.tokenizer import SemanticTokenizer, code_mask
from chorus.codec.vocoder import Vocoder


def speaker_loss(model: SpeakerEncoder, params, batch: dict):
    """CosFace: softmax over s * (cos(e, w_k) - m [k = label]) over the training voices."""
    c = model.cfg
    emb = model.apply({"params": params["speaker"]}, batch["mel"], batch["mel_mask"])
    w = params["classifier"]
    w = w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-6)
    cos = emb @ w.T
    onehot = jax.nn.one_hot(batch["speaker"], w.shape[0])
    logits = c.scale * (cos - c.margin * onehot)
    loss = jnp.mean(optax.softmax_cross_entropy(logits, onehot))
    acc = jnp.mean(jnp.argmax(cos, axis=-1) == batch["speaker"])
    return loss, {"ce": loss, "acc": acc}


def tokenizer_loss(model: SemanticTokenizer, params, batch: dict, reconstruction_weight: float):
    """CTC (per target character) + weighted L1 mel reconstruction, both on padded batches."""
    codes, logits, rec = model.apply({"params": params}, batch["mel"], batch["mel_mask"])
    cmask = code_mask(batch["mel_mask"])
    label_pad = 1.0 - batch["label_mask"]
    per_seq = optax.ctc_loss(logits, 1.0 - cmask, batch["labels"], label_pad,
                             blank_id=text.BLANK)
    chars = jnp.maximum(jnp.sum(batch["label_mask"], axis=1), 1.0)
    ctc = jnp.mean(per_seq / chars)
    rec_l1 = masked_mean(jnp.abs(rec - batch["mel"]), batch["mel_mask"])
    indices = fsq.codes_to_indices(codes, model.fsq_cfg.levels)
    loss = ctc + reconstruction_weight * rec_l1
    return loss, {"ctc": ctc, "rec_l1": rec_l1,
                  "codes_used": distinct_codes(indices, cmask, model.fsq_cfg.num_codes)}


def distinct_codes(indices: jax.Array, mask: jax.Array, num_codes: int) -> jax.Array:
    """Number of distinct codes in the batch (a codebook-usage health metric)."""
    hist = jnp.zeros((num_codes,)).at[indices.reshape(-1)].add(mask.reshape(-1))
    return jnp.sum(hist > 0).astype(jnp.float32)


def flow_loss(model: FlowDecoder, params, batch: dict, rng: jax.Array):
    """OT-CFM with conditioning dropout + the prior's MSE; batch mel is the target x1.

    x0 = start_point(prior, noise) (the prior is not trained through x0, only by its own
    MSE), x_t = (1 - (1 - s) t) x0 + t x1, target velocity x1 - (1 - s) x0; t is drawn on the
    flow's time schedule; the conditioning mu is zeroed for a `cond_dropout` share of rows.
    """
    cfg = model.cfg
    x1, mask = batch["mel"], batch["mel_mask"]
    k_t, k_noise, k_drop = jax.random.split(rng, 3)
    b = x1.shape[0]
    u = jax.random.uniform(k_t, (b,))
    t = 1.0 - jnp.cos(u * jnp.pi / 2) if cfg.time_schedule == "cosine" else u
    noise = jax.random.normal(k_noise, x1.shape)
    s = cfg.sigma_min
    keep = (jax.random.uniform(k_drop, (b,)) >= cfg.cond_dropout).astype(x1.dtype)

    def velocity(module):
        mu = module.condition(batch["codes"], batch["code_mask"], batch["speaker"])
        prior = module.prior(mu)
        x0 = start_point(cfg, jax.lax.stop_gradient(prior), noise)
        xt = (1 - (1 - s) * t[:, None, None]) * x0 + t[:, None, None] * x1
        target = x1 - (1 - s) * x0
        return module.field(xt, mu * keep[:, None, None], t, mask), prior, target

    v, prior, target = nn.apply(velocity, model)({"params": params})
    fm = masked_mean((v - target) ** 2, mask)
    prior_mse = masked_mean((prior - x1) ** 2, mask)
    return fm + cfg.prior_weight * prior_mse, {"fm_mse": fm, "prior_mse": prior_mse}


def vocoder_loss(model: Vocoder, params, batch: dict, mel_cfg: MelConfig):
    """Log-mel L1 + multi-resolution STFT (spectral convergence + log magnitude) on crops."""
    wave = batch["wave"]
    target_mel = mel_jax.log_mel(wave)
    mask = jnp.ones(target_mel.shape[:2])
    pred = model.apply({"params": params}, mel_cfg.normalize(target_mel), mask)
    mel_l1 = jnp.mean(jnp.abs(mel_jax.log_mel(pred) - target_mel))
    sc_total, mag_total = 0.0, 0.0
    for n_fft in model.cfg.stft_resolutions:
        ref = jnp.abs(mel_jax.stft(wave, n_fft, n_fft // 4))
        hyp = jnp.abs(mel_jax.stft(pred, n_fft, n_fft // 4))
        sc_total += jnp.sqrt(jnp.sum((ref - hyp) ** 2) / jnp.maximum(jnp.sum(ref**2), 1e-8))
        mag_total += jnp.mean(jnp.abs(jnp.log(jnp.maximum(ref, 1e-5))
                                      - jnp.log(jnp.maximum(hyp, 1e-5))))
    stft_loss = (sc_total + mag_total) / len(model.cfg.stft_resolutions)
    loss = model.cfg.mel_weight * mel_l1 + model.cfg.stft_weight * stft_loss
    return loss, {"mel_l1": mel_l1, "stft": stft_loss}


# ----------------------------------------------------------------------------- per stage


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the trainer needs of one stage (see chorus.training.experiment)."""

    init_fn: Callable[[jax.Array], Any]
    loss_fn: Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]
    export_params: Callable[[Any], dict]


def init_classifier(key: jax.Array, num_speakers: int, embed_dim: int) -> jax.Array:
    return jax.random.normal(key, (num_speakers, embed_dim)) / np.sqrt(embed_dim)


def objective(stage: str, cfg: CodecConfig, speaker_classes: int) -> Objective:
    models = CodecModels.build(cfg)

    def network_init(key):
        return {stage: init_params(models, cfg, stage, key)}

    def network_only(params):
        return {stage: params[stage]}

    if stage == "speaker":
        def init(key):
            k1, k2 = jax.random.split(key)
            return {"speaker": init_params(models, cfg, "speaker", k1),
                    "classifier": init_classifier(k2, speaker_classes, cfg.speaker.embed_dim)}

        return Objective(init, lambda p, b, r: speaker_loss(models.speaker, p, b),
                         network_only)
    if stage == "tokenizer":
        weight = cfg.tokenizer.reconstruction_weight
        return Objective(network_init, lambda p, b, r: tokenizer_loss(
            models.tokenizer, p["tokenizer"], b, weight), network_only)
    if stage == "flow":
        return Objective(network_init, lambda p, b, r: flow_loss(models.flow, p["flow"], b, r),
                         network_only)
    if stage == "vocoder":
        return Objective(network_init, lambda p, b, r: vocoder_loss(
            models.vocoder, p["vocoder"], b, cfg.mel), network_only)
    raise ValueError(f"experiment.stage: expected one of {', '.join(NETWORKS)}, got {stage!r}")
