"""Rollouts and scoring: sample completions from the policy, then score them teacher-forced.

    sample(model, params, prompts, lengths, rng, settings, num_samples)  -> Rollout
        chorus.decoding.generate under the hood: KV cache, temperature / top-k / top-p,
        stop tokens, G samples per prompt in contiguous groups, static shapes (jit),
        deterministic given rng.
    pack_rows(prompts, prompt_lengths, completions, completion_lengths, width, pad_id)
        -> numpy rows [prompt | completion | pad] with next-token targets and a completion
           mask: the one layout every RL batch (and the SFT warm-up) uses.
    score(model, params, rows) -> per-token logps [R, W] (0 off the completion mask)
        Policy, reference and old policy are this same function with other params.

Row layout: position t predicts targets[t] = tokens[t + 1]; the completion mask is 1 exactly
where targets[t] is a completion token, so `score(...).sum(-1)` is the completion logp.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import DecodeConfig
from chorus.decoding.generate import Rollout, generate
from chorus.model.unified import UnifiedAudioLM
from chorus.rl.logprobs import sequence_logprobs

ROW_KEYS = ("tokens", "targets", "positions", "segment_ids", "mask")


def sample(model: UnifiedAudioLM, params, prompts, prompt_lengths, rng: jax.Array,
           settings: DecodeConfig, num_samples: int = 1,
           stop_tokens: tuple[int, ...] | None = None, audio: dict | None = None) -> Rollout:
    """`num_samples` completions per prompt; rows i*G .. i*G+G-1 continue prompt i.

    params: the backbone's (unboxed) params; audio: None or the prompts' clips
    {"audio_features", "audio_mask"} (encoded once per prompt). Returns tokens, per-token
    logps under the sampling distribution and under the temperature-1 policy, and masks.
    """
    audio = {} if audio is None else {k: jnp.asarray(v) for k, v in audio.items()}
    return generate(model, params, jnp.asarray(prompts, jnp.int32),
                    jnp.asarray(prompt_lengths, jnp.int32), rng, settings,
                    num_samples=num_samples, stop_tokens=stop_tokens, **audio)


def audio_rows(audio: dict | None, repeat: int = 1) -> dict[str, np.ndarray]:
    """The prompts' audio for packed rows (each prompt's clips repeated for its G rows)."""
    if audio is None:
        return {}
    return {k: np.repeat(np.asarray(audio[k]), repeat, axis=0)
            for k in ("audio_features", "audio_mask")}


def pack_rows(prompts: np.ndarray, prompt_lengths: np.ndarray, completions: np.ndarray,
              completion_lengths: np.ndarray, width: int, pad_id: int) -> dict[str, np.ndarray]:
    """Rows [prompt[:p] | completion[:c] | pad] of `width` with targets, positions, segments.

    prompts [R, P], completions [R, N] (right-padded), lengths [R]. mask [R, width] fp32 is 1
    at the c positions whose target is a completion token (p-1 .. p+c-2).
    """
    prompts, completions = np.asarray(prompts), np.asarray(completions)
    p_len, c_len = np.asarray(prompt_lengths), np.asarray(completion_lengths)
    rows = prompts.shape[0]
    if completions.shape[0] != rows:
        raise ValueError(f"completions: expected {rows} rows (one per prompt row), got "
                         f"{completions.shape[0]}")
    need = int((p_len + c_len).max()) if rows else 0
    if need > width:
        raise ValueError(f"width: expected >= the longest prompt + completion ({need}), got "
                         f"{width}")
    tokens = np.full((rows, width), pad_id, np.int32)
    mask = np.zeros((rows, width), np.float32)
    for r in range(rows):
        p, c = int(p_len[r]), int(c_len[r])
        tokens[r, :p] = prompts[r, :p]
        tokens[r, p:p + c] = completions[r, :c]
        mask[r, p - 1:p - 1 + c] = 1.0
    targets = np.concatenate([tokens[:, 1:], np.full((rows, 1), pad_id, np.int32)], axis=1)
    valid = np.arange(width)[None, :] < (p_len + c_len)[:, None]
    return {"tokens": tokens, "targets": targets,
            "positions": np.broadcast_to(np.arange(width, dtype=np.int32), (rows, width)).copy(),
            "segment_ids": valid.astype(np.int32), "mask": mask}


def forward(model: UnifiedAudioLM, params, rows: dict, prefix: str = "") -> dict:
    """Teacher-forced backbone forward over packed rows ({prefix}tokens, ..., and the
    {prefix}audio_features / audio_mask of audio prompts when present)."""
    get = lambda k: rows[prefix + k]
    audio = [rows.get(prefix + k) for k in ("audio_features", "audio_mask")]  # None: text-only
    return model.apply({"params": params}, get("tokens"), get("positions"), get("segment_ids"),
                       *audio)


def token_logps(model: UnifiedAudioLM, params, rows: dict, prefix: str = "") -> jax.Array:
    """Per-token logps [R, W] of the targets under `params`, 0 off the completion mask."""
    out = forward(model, params, rows, prefix)
    return sequence_logprobs(out["logits"], rows[prefix + "targets"], rows[prefix + "mask"])


@functools.partial(jax.jit, static_argnames=("model", "prefix"))
def score(model: UnifiedAudioLM, params, rows: dict, prefix: str = "") -> jax.Array:
    """Jitted `token_logps`: the same apply function for policy, reference and old policy."""
    return token_logps(model, params, rows, prefix)


def rollout_rows(rollout: Rollout, prompts: np.ndarray, prompt_lengths: np.ndarray, width: int,
                 pad_id: int) -> dict[str, np.ndarray]:
    """Packs a rollout's completions behind their (repeated) prompts; adds the rollout's own
    per-token logps in the row layout ("sample_logps", "policy_logps") for checks."""
    index = np.asarray(rollout.prompt_index)
    lengths = np.asarray(rollout.lengths)
    rows = pack_rows(np.asarray(prompts)[index], np.asarray(prompt_lengths)[index],
                     np.asarray(rollout.tokens), lengths, width, pad_id)
    for name, values in (("sample_logps", rollout.logprobs),
                         ("policy_logps", rollout.policy_logprobs)):
        laid = np.zeros(rows["mask"].shape, np.float32)
        for r, p in enumerate(np.asarray(prompt_lengths)[index]):
            laid[r, p - 1:p - 1 + lengths[r]] = np.asarray(values)[r, :lengths[r]]
        rows[name] = laid
    return rows
