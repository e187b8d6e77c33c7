"""The generic language-model loss over the unified stream (the SFT objective of every mode)."""

from __future__ import annotations

from chorus.model.losses import cross_entropy, token_accuracy


def make_lm_loss(model):
    """loss_fn(params, batch, rng) -> (loss, metrics): CE on tokens where loss_mask is set."""

    def loss_fn(params, batch, rng):
        del rng
        out = model.apply({"params": params}, batch["tokens"], batch["positions"],
                          batch["segment_ids"], batch["audio_features"], batch["audio_mask"])
        loss, count = cross_entropy(out["logits"], batch["targets"], batch["loss_mask"])
        return loss, {"ce": loss, "tokens": count,
                      "accuracy": token_accuracy(out["logits"], batch["targets"],
                                                 batch["loss_mask"]),
                      "audio_placeholder_excess": abs(out["audio_placeholder_excess"]).sum()}

    return loss_fn


def backbone_lm_loss(model):
    """`make_lm_loss` on params["backbone"] (a mode whose params are {"backbone": ...}), with
    the loss itself among the metrics."""
    lm_loss = make_lm_loss(model)

    def loss_fn(params, batch, rng):
        ce, metrics = lm_loss(params["backbone"], batch, rng)
        return ce, {**metrics, "loss": ce}

    return loss_fn
