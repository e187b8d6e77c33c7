"""The ASR model: the shared backbone plus this mode's heads, and its loss.

    params = {"backbone", "mtp"?, "ctc"?, "ctc_char"?}
    loss   = transcript CE (target positions of the regime's loss_mask)
             + lambda/k * sum_j CE_j of the k multi-token-prediction heads (experiment.mtp)
             + ctc_weight * CTC of each clip's transcript over its adaptor frames
               (or the 25 Hz encoder frames the adaptor reads: experiment.ctc_frames)
             + char_ctc_weight * CTC of the transcript's characters over the encoder frames
               (a training signal only; the pieces' spellings come from the tokenizer)

The backbone knows no mode: MTP heads read its hidden states, the CTC head the adaptor frames
it spliced in. SpecAugment masks the training log-mel with the step's rng; evaluation uses the
same loss without augmentation (`Experiment.eval_loss_fn`).

Adversarial training (experiment.adversarial, a PGDConfig): the training loss is

    (1 - w) * loss(batch) + w * loss(batch with audio_features + delta)

the clean/adversarial mix of Goodfellow et al. 2015 (w = experiment.adversarial_weight;
w = 1 is Madry et al. 2018's PGD training). delta is PGD in the epsilon L-infinity ball
ascending the summed transcript CE (the backbone's own objective, not the MTP / CTC terms)
with the params held constant, padded frames never moved, and the result under
stop_gradient (the params' gradient does not run through the attack). The attack starts
from the SpecAugmented features and draws its random start from a key folded out of the
step's rng, so SpecAugment masks are the same with or without it. Metrics keep their names
for the clean pass and add adv/ce, adv/accuracy, adv/loss (the perturbed pass), adv/linf
(the largest |delta| of the batch) and adv/clean_loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from chorus.analysis.attacks import PGDConfig, pgd_linf
from chorus.audio.spec_augment import SpecAugmentConfig, spec_augment
from chorus.config import Config
from chorus.model import heads as mtp_heads
from chorus.model.ctc import (
    CHARACTERS,
    CtcHead,
    character_labels,
    character_table,
    clip_transcripts,
    ctc_loss,
)
from chorus.model.factory import backbone_init
from chorus.model.losses import cross_entropy, token_accuracy
from chorus.model.unified import UnifiedAudioLM
from chorus.rl.logprobs import sequence_logprobs
from chorus.vocab import VocabLayout
from experiments.asr.settings import AsrSettings


@dataclasses.dataclass(frozen=True)
class AsrModel:
    """The backbone, its MTP heads and CTC head (each optional beyond the backbone);
    params = {"backbone", "mtp"?, "ctc"?}."""

    backbone: UnifiedAudioLM
    heads: Any  # flax module or None
    mtp: mtp_heads.MTPConfig | None
    ctc_head: CtcHead | None = None
    ctc_weight: float = 0.0
    spec_augment: SpecAugmentConfig | None = None  # applied by loss_fn(augment=True)
    adversarial: PGDConfig | None = None  # PGD on the features, by loss_fn(augment=True)
    adversarial_weight: float = 0.5  # loss = (1 - w) * clean + w * adversarial
    ctc_frames: str = "adaptor"  # the frames the CTC head reads: "adaptor" | "encoder"
    label_smoothing: float = 0.0  # ε of the transcript CE (not of the MTP heads or CTC)
    char_ctc_head: CtcHead | None = None  # the character CTC over the encoder frames
    char_ctc_weight: float = 0.0

    @classmethod
    def build(cls, config: Config, settings: AsrSettings) -> AsrModel:
        mtp = settings.mtp
        heads = None if mtp is None else mtp_heads.build_mtp(config.model, mtp)
        ctc_head = CtcHead(config.model.text_vocab_size) if settings.ctc_weight > 0 else None
        char_head = CtcHead(len(CHARACTERS)) if settings.char_ctc_weight > 0 else None
        return cls(UnifiedAudioLM(config), heads, mtp, ctc_head, settings.ctc_weight,
                   settings.spec_augment, settings.adversarial, settings.adversarial_weight,
                   settings.ctc_frames, settings.label_smoothing, char_head,
                   settings.char_ctc_weight)

    def ctc_inputs(self, out: dict) -> tuple[jax.Array, jax.Array]:
        """(frames [B, A, F', d], mask [B, A, F']) the CTC head reads from a backbone output
        (`experiment.ctc_frames`)."""
        if self.ctc_frames == "encoder":
            return out["encoder_frames"], out["encoder_frame_mask"]
        return out["audio_frames"], out["audio_frame_mask"]

    def init_fn(self, config: Config):
        """rng -> boxed params (logical axis names on the leaves; the trainer shards)."""
        backbone = backbone_init(self.backbone, config)

        def init_fn(rng):
            backbone_rng, heads_rng, ctc_rng = jax.random.split(rng, 3)
            params = {"backbone": backbone(backbone_rng)}
            if self.heads is not None:
                params["mtp"] = mtp_heads.init_boxed(self.heads, config, heads_rng)
            if self.ctc_head is not None:
                width = (config.audio.d_model if self.ctc_frames == "encoder"
                         else config.model.d_model)
                params["ctc"] = self.ctc_head.init(ctc_rng, jnp.zeros((1, 8, width)))["params"]
            if self.char_ctc_head is not None:
                params["ctc_char"] = self.char_ctc_head.init(
                    jax.random.fold_in(ctc_rng, 1),
                    jnp.zeros((1, 8, config.audio.d_model)))["params"]
            return params

        return init_fn

    def transcript_nll(self, backbone_params, batch: dict) -> jax.Array:
        """[B] summed transcript CE of each row (the loss_mask positions): the objective the
        adversarial perturbation ascends."""
        out = self.backbone.apply({"params": backbone_params}, batch["tokens"],
                                  batch["positions"], batch["segment_ids"],
                                  batch["audio_features"], batch["audio_mask"])
        return -sequence_logprobs(out["logits"], batch["targets"], batch["loss_mask"]).sum(-1)

    def perturb(self, backbone_params, batch: dict, rng) -> dict:
        """The batch with audio_features moved by PGD (self.adversarial) up the transcript
        CE, within epsilon, valid frames only; params constant, result under stop_gradient."""
        params = jax.lax.stop_gradient(backbone_params)

        def objective(features):
            return self.transcript_nll(params, {**batch, "audio_features": features})

        feats, _ = pgd_linf(objective, batch["audio_features"], self.adversarial, rng,
                            mask=batch["audio_mask"][..., None])
        return {**batch, "audio_features": feats}

    def loss_fn(self, train_backbone: bool = True, augment: bool = False, pieces=None):
        """Transcript CE (label-smoothed by experiment.label_smoothing) + MTP (lambda/k *
        sum_j CE_j) + ctc_weight * CTC over the adaptor frames + char_ctc_weight * character
        CTC over the encoder frames, which spells the pieces with `pieces()` (a callable
        returning each text id's piece string, read when the loss is first traced).
        train_backbone=False (second-stage heads): the backbone is a constant and the loss
        is the MTP loss alone.
        augment: SpecAugment the log-mel with the step's rng, then
        (experiment.adversarial) mix in the loss of a PGD-perturbed copy (the training loss;
        evaluation uses augment=False). Metrics include token accuracy per depth."""
        layout = VocabLayout.from_model_config(self.backbone.config.model)
        spelled = []  # the character table, built at the first trace

        def char_table():
            if not spelled:
                if pieces is None:
                    raise ValueError("experiment.char_ctc_weight > 0: the character CTC needs "
                                     "the tokenizer's pieces (AsrModel.loss_fn(pieces=...))")
                spelled.append(character_table(pieces()))
            return spelled[0]

        def clean_loss(params, batch):
            backbone = params["backbone"]
            if not train_backbone:
                backbone = jax.lax.stop_gradient(backbone)
            out = self.backbone.apply({"params": backbone}, batch["tokens"], batch["positions"],
                                      batch["segment_ids"], batch["audio_features"],
                                      batch["audio_mask"])
            ce, count = cross_entropy(out["logits"], batch["targets"], batch["loss_mask"])
            metrics = {"ce": jax.lax.stop_gradient(ce), "tokens": count,
                       "accuracy": jax.lax.stop_gradient(token_accuracy(
                           out["logits"], batch["targets"], batch["loss_mask"])),
                       # 0 when the data pipeline sized the <audio> placeholders to the clips
                       "audio_placeholder_excess": abs(out["audio_placeholder_excess"]).sum()}
            loss = 0.0
            if train_backbone:  # the smoothed CE trains; the plain one is the metric
                loss = ce if not self.label_smoothing else cross_entropy(
                    out["logits"], batch["targets"], batch["loss_mask"], self.label_smoothing)[0]
            if self.heads is not None:
                extra, mtp_metrics = mtp_heads.mtp_loss(self.backbone, backbone, self.heads,
                                                        params["mtp"], out["hidden"], batch,
                                                        self.mtp, out["logits"])
                loss, metrics = loss + extra, {**metrics, **mtp_metrics}
            ctc_heads = self.ctc_head is not None or self.char_ctc_head is not None
            if ctc_heads and train_backbone:  # each clip's transcript pieces, read once
                frames, frame_mask = (self.ctc_inputs(out) if self.ctc_head is not None else
                                      (out["encoder_frames"], out["encoder_frame_mask"]))
                labels = clip_transcripts(
                    batch["tokens"], batch["targets"], batch["loss_mask"], batch["segment_ids"],
                    out["audio_frame_mask"], placeholder_id=layout.audio_placeholder_id,
                    text_size=layout.text_size, width=frame_mask.shape[-1])
            if self.ctc_head is not None and train_backbone:
                logits = self.ctc_head.apply({"params": params["ctc"]}, frames)
                ctc, ctc_metrics = ctc_loss(logits, frame_mask, labels)
                loss, metrics = loss + self.ctc_weight * ctc, {**metrics, **ctc_metrics}
            if self.char_ctc_head is not None and train_backbone:
                chars = character_labels(labels, *char_table(),
                                         width=out["encoder_frame_mask"].shape[-1])
                logits = self.char_ctc_head.apply({"params": params["ctc_char"]},
                                                  out["encoder_frames"])
                char, char_metrics = ctc_loss(logits, out["encoder_frame_mask"], chars)
                loss = loss + self.char_ctc_weight * char
                metrics = {**metrics, **{k.replace("ctc/", "ctc_char/"): v
                                         for k, v in char_metrics.items()}}
            return loss, {**metrics, "loss": loss}

        adversarial = augment and self.adversarial is not None
        w = self.adversarial_weight

        def loss_fn(params, batch, rng):
            if augment and self.spec_augment is not None:
                b, a, t, n = batch["audio_features"].shape
                feats = spec_augment(rng, batch["audio_features"].reshape(b * a, t, n),
                                     batch["audio_mask"].reshape(b * a, t), self.spec_augment)
                batch = {**batch, "audio_features": feats.reshape(b, a, t, n)}
            if not adversarial:
                return clean_loss(params, batch)
            adv_batch = self.perturb(params["backbone"], batch, jax.random.fold_in(rng, 1))
            clean, metrics = clean_loss(params, batch)
            if w == 1:  # the clean pass is for the metrics only: no backward through it
                clean = jax.lax.stop_gradient(clean)
            adv, adv_metrics = clean_loss(params, adv_batch)
            loss = (1 - w) * clean + w * adv
            linf = jnp.max(jnp.abs(adv_batch["audio_features"] - batch["audio_features"]))
            return loss, {**metrics, "loss": loss, "adv/ce": adv_metrics["ce"],
                          "adv/accuracy": adv_metrics["accuracy"],
                          "adv/loss": jax.lax.stop_gradient(adv_metrics["loss"]),
                          "adv/clean_loss": jax.lax.stop_gradient(clean), "adv/linf": linf}

        return loss_fn
