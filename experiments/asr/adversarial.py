"""Adversarial clips for the ASR model: PGD (chorus.analysis.attacks) on log p(transcript |
clip) (experiments/asr/scoring.py), in the log-mel or on the waveform.

    score = transcript_scorer(asr.backbone, layout, num_frames, reference_ids)
    out = attack_log_mel(score, params["backbone"], feats, PGDConfig(epsilon=0.25), rng)
    out = attack_log_mel(score, params["backbone"], feats, config, rng, target_scorer=target)
    out = attack_wave(score, params["backbone"], waves, PGDConfig(epsilon=0.002), rng)
    texts = transcribe(transcriber, out.features)          # greedy: what the model now hears

Untargeted (no target_scorer): lower log p(reference | clip). Targeted: raise log p(target |
clip). Log-mel epsilon is in log-mel units (natural log of mel power; the encoder divides by
audio.mel_std, 4 by default); waveform epsilon is in sample units, the clip kept in [-1, 1],
its features `chorus.audio.mel_jax.log_mel` (N samples -> N // 160 frames, which must be the
scorer's num_frames). One scorer is one clip length and one transcript; the batch holds
variants of that clip (e.g. the same clip under different random starts).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from chorus.analysis.attacks import PGDConfig, attack_objective, pgd_linf
from chorus.audio import mel_jax
from chorus.audio.mel import HOP_LENGTH
from experiments.asr.scoring import TranscriptScorer


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """inputs: the adversarial log-mel [B, T, n] (attack_log_mel) or waveform [B, N]
    (attack_wave); features: the adversarial log-mel either way. Log-probs are [B] summed
    over the transcript and <eos>; the target's are None for an untargeted attack."""

    inputs: jax.Array
    features: jax.Array
    reference_before: jax.Array
    reference_after: jax.Array
    target_before: jax.Array | None = None
    target_after: jax.Array | None = None


def _check_scorers(scorer: TranscriptScorer, target_scorer: TranscriptScorer | None) -> None:
    if target_scorer is not None and target_scorer.num_frames != scorer.num_frames:
        raise ValueError(f"target_scorer num_frames: expected the scorer's {scorer.num_frames}, "
                         f"got {target_scorer.num_frames}")


# The scorers are pytrees (their stream and clip length are arrays): one program per bucket.
@functools.partial(jax.jit, static_argnames=("config", "wave"))
def _attack(scorer, backbone_params, x, config, rng, target_scorer, wave):
    params = jax.lax.stop_gradient(backbone_params)
    features = mel_jax.log_mel if wave else (lambda z: z)
    goal = scorer if target_scorer is None else target_scorer
    objective = attack_objective(lambda z: goal(params, features(z)),
                                 targeted=target_scorer is not None)
    bounds = dict(lower=-1.0, upper=1.0) if wave else {}
    x_adv, _ = pgd_linf(objective, x, config, rng, **bounds)
    clean, adv = features(x), features(x_adv)
    out = {"inputs": x_adv, "features": adv, "reference_before": scorer(params, clean),
           "reference_after": scorer(params, adv)}
    if target_scorer is not None:
        out.update(target_before=target_scorer(params, clean),
                   target_after=target_scorer(params, adv))
    return out


def attack_log_mel(scorer: TranscriptScorer, backbone_params, features, config: PGDConfig,
                   rng: jax.Array, target_scorer: TranscriptScorer | None = None,
                   ) -> AttackResult:
    """PGD on log-mel `features` [B, T, n] (T = scorer.num_frames): untargeted, lowering the
    scorer's log p(reference); with `target_scorer`, raising log p(target) instead."""
    _check_scorers(scorer, target_scorer)
    features = jnp.asarray(features, jnp.float32)
    t = scorer.num_frames
    if features.ndim != 3 or features.shape[1] != t:
        raise ValueError(f"attack_log_mel features: expected [B, {t}, n_mels], "
                         f"got {tuple(features.shape)}")
    # Attacked at the scorer's padded width (the padding is masked: no gradient reaches it),
    # returned at the clip's.
    out = _attack(scorer, backbone_params, scorer.pad(features), config, rng, target_scorer,
                  False)
    return AttackResult(**{**out, "inputs": out["inputs"][:, :t],
                           "features": out["features"][:, :t]})


def attack_wave(scorer: TranscriptScorer, backbone_params, waves, config: PGDConfig,
                rng: jax.Array, target_scorer: TranscriptScorer | None = None) -> AttackResult:
    """PGD on 16 kHz waveforms [B, N] in [-1, 1] (N // 160 = scorer.num_frames), through
    the differentiable log-mel; the adversarial waves stay in [-1, 1]."""
    _check_scorers(scorer, target_scorer)
    waves = jnp.asarray(waves, jnp.float32)
    if waves.ndim != 2 or waves.shape[1] // HOP_LENGTH != scorer.num_frames:
        raise ValueError(f"attack_wave waves: expected [B, N] with N // {HOP_LENGTH} = "
                         f"{scorer.num_frames} frames, got {tuple(waves.shape)}")
    return AttackResult(**_attack(scorer, backbone_params, waves, config, rng,
                                  target_scorer, True))


def transcribe(transcriber, features) -> list[str]:
    """Greedy transcripts of log-mel clips [B, T, n] (one clip length, T <= the run's
    train.max_mel_frames) with an experiments.asr.transcriber.Transcriber."""
    from experiments.asr.regime import asr_prompt
    from experiments.asr.transcriber import pad_requests

    feats = np.asarray(features, np.float32)
    t = feats.shape[1]
    examples = [{"prompt_tokens": asr_prompt(transcriber.layout, t), "audio_features": f,
                 "audio_mask": np.ones(t, bool)} for f in feats]
    request = pad_requests(examples, transcriber.layout, transcriber.max_frames)
    return transcriber.texts(transcriber.decode(request, "greedy"))
