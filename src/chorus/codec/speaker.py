"""Speaker encoder (log-mel -> unit-norm embedding), cosine scoring and the equal error rate.

Trained with CosFace over the training voices (experiments/codec/losses.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chorus.codec.config import SpeakerConfig
from chorus.codec.layers import ConvNeXtBlock


class SpeakerEncoder(nn.Module):
    cfg: SpeakerConfig

    @nn.compact
    def __call__(self, mel: jax.Array, mask: jax.Array) -> jax.Array:
        """Normalized log-mel (B, T, n_mels), mask (B, T) -> embeddings (B, E), unit L2 norm."""
        c = self.cfg
        h = nn.Dense(c.dim, name="mel_in")(mel)
        for i in range(c.blocks):
            h = ConvNeXtBlock(c.dim, c.kernel_size, c.dilations[i % len(c.dilations)],
                              mlp_ratio=c.mlp_ratio, name=f"block_{i}")(h, mask)
        h = nn.LayerNorm(name="norm")(h)
        # Mean + standard deviation pooling over valid frames.
        m = mask[..., None]
        count = jnp.maximum(jnp.sum(m, axis=1), 1.0)
        mean = jnp.sum(h * m, axis=1) / count
        var = jnp.sum(((h - mean[:, None]) ** 2) * m, axis=1) / count
        stats = jnp.concatenate([mean, jnp.sqrt(var + 1e-5)], axis=-1)
        e = nn.Dense(c.embed_dim, name="embed")(nn.gelu(nn.Dense(c.dim, name="pool")(stats)))
        return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-6)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.maximum(na * nb, 1e-12)


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) for trial scores and same-speaker labels.

    Sweeps thresholds over the sorted scores; accept = score >= threshold. EER is where the
    false-accept rate (impostors accepted) meets the false-reject rate (targets rejected),
    linearly interpolated between the two sweep points that bracket the crossing.
    """
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same, bool)
    if scores.shape != same.shape or scores.ndim != 1:
        raise ValueError(f"equal_error_rate: expected equal 1-D shapes, got {scores.shape} "
                         f"and {same.shape}")
    n_target, n_impostor = int(same.sum()), int((~same).sum())
    if n_target == 0 or n_impostor == 0:
        raise ValueError(f"equal_error_rate: expected target and impostor trials, got "
                         f"{n_target} target and {n_impostor} impostor")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    # Threshold just below the k-th highest score accepts the top k trials (k = 0..n).
    accepted_targets = np.concatenate([[0], np.cumsum(y)])
    accepted_impostors = np.concatenate([[0], np.cumsum(~y)])
    # Ties must be accepted together: keep only cut points between distinct scores.
    cut = np.concatenate([[True], s[1:] != s[:-1], [True]])
    far = (accepted_impostors / n_impostor)[cut]
    frr = (1.0 - accepted_targets / n_target)[cut]
    thresholds = np.concatenate([[np.inf], s])[cut]
    diff = far - frr  # rises from -1 to +1 as more trials are accepted
    i = int(np.argmax(diff >= 0))
    if i == 0 or diff[i] == 0:
        return float(far[i]), float(thresholds[i])
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = far[i - 1] + w * (far[i] - far[i - 1])
    return float(eer), float(thresholds[i])


def trial_scores(embeddings: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs of distinct utterances: cosine scores and same-speaker flags."""
    emb = np.asarray(embeddings, np.float64)
    i, j = np.triu_indices(len(labels), k=1)
    lab = np.asarray(labels)
    return cosine(emb[i], emb[j]), lab[i] == lab[j]
