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

Placement: sampling and scoring run where the params live. On the trainer's mesh (params
sharded by their logical axes) the jitted programs take the params with their own shardings
(no host copy, no gather) and the rows split over the mesh's batch axes (data, fsdp) when they
divide evenly, replicated otherwise; sampled rows come back split the same way
(`Placement`). Params on one device run there. Results are pulled to the host only where a
host needs them (decoding text, rewards, the trainer's batches).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from chorus import sharding
from chorus.config import DecodeConfig
from chorus.decoding.constraints import check_allowed
from chorus.decoding.generate import Rollout, generate
from chorus.model.unified import UnifiedAudioLM
from chorus.rl.logprobs import sequence_logprobs
from chorus.rl.task import AUDIO_KEYS
from chorus.vocab import VocabLayout

ROW_KEYS = ("tokens", "targets", "positions", "segment_ids", "mask")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where rollout work runs: the mesh the params live on (None: one device, or host)."""

    mesh: Mesh | None

    @classmethod
    def of(cls, params) -> Placement:
        return cls(sharding.mesh_of(params))

    def rows(self, count: int) -> NamedSharding | None:
        """`count` rows split over the batch axes when they divide evenly, else replicated."""
        if self.mesh is None:
            return None
        if count % sharding.data_parallel_size(self.mesh) == 0:
            return sharding.batch_sharding(self.mesh, 1)  # trailing axes: replicated
        return sharding.replicated(self.mesh)

    def put(self, rows):
        """Host rows (a tree of [count, ...] arrays) onto the devices, split as `rows`."""
        leaves = jax.tree.leaves(rows)
        if not leaves:
            return rows
        target = self.rows(np.shape(leaves[0])[0])
        if target is None:
            return jax.tree.map(jnp.asarray, rows)
        return jax.device_put(rows, target)

    def activate(self):
        """The mesh and logical-axis rules for tracing (the model's activation constraints)."""
        return contextlib.nullcontext() if self.mesh is None else sharding.activate(self.mesh)


@functools.partial(jax.jit, static_argnames=("model", "settings", "num_samples", "stop_tokens",
                                             "out_rows"))
def _sample(model, params, prompts, lengths, rng, audio, allowed_ids, *, settings, num_samples,
            stop_tokens, out_rows):
    out = generate(model, params, prompts, lengths, rng, settings, num_samples=num_samples,
                   stop_tokens=stop_tokens, allowed_ids=allowed_ids, **audio)
    return out if out_rows is None else jax.lax.with_sharding_constraint(out, out_rows)


def sample(model: UnifiedAudioLM, params, prompts, prompt_lengths, rng: jax.Array,
           settings: DecodeConfig, num_samples: int = 1,
           stop_tokens: tuple[int, ...] | None = None, audio: dict | None = None,
           allowed_ids: np.ndarray | None = None) -> Rollout:
    """`num_samples` completions per prompt; rows i*G .. i*G+G-1 continue prompt i.

    params: the backbone's (unboxed) params, on the mesh they live on (see Placement); audio:
    None or the prompts' clips {"audio_features", "audio_mask"} (encoded once per prompt).
    stop_tokens: None = (eos,). allowed_ids: None, or a bool mask [V] (every prompt) / [B, V]
    (per prompt) of the ids a row may sample (checked here, on the host: generate's check
    cannot see values under jit).
    Returns tokens, per-token logps under the sampling distribution (the mask applied) and
    under the temperature-1 policy (unmasked), and masks.
    """
    prompts, prompt_lengths = np.asarray(prompts, np.int32), np.asarray(prompt_lengths, np.int32)
    if prompt_lengths.shape != prompts.shape[:1] or (
            prompt_lengths.size and not 1 <= prompt_lengths.min() <= prompt_lengths.max()
            <= prompts.shape[1]):
        raise ValueError(f"prompt_lengths: expected {prompts.shape[:1]} values in "
                         f"[1, {prompts.shape[1]}], got {prompt_lengths}")
    if allowed_ids is not None:  # a one-line error naming the field, before any tracing
        allowed_ids = np.asarray(allowed_ids)
        check_allowed(allowed_ids, prompts.shape[0],
                      VocabLayout.from_model_config(model.config.model).size)
    placement = Placement.of(params)
    inputs = placement.put({"prompts": prompts, "lengths": prompt_lengths,
                            **({} if audio is None else {k: np.asarray(audio[k]) for k in audio})})
    with placement.activate():
        return _sample(model, params, inputs.pop("prompts"), inputs.pop("lengths"), rng, inputs,
                       allowed_ids, settings=settings, num_samples=num_samples,
                       stop_tokens=None if stop_tokens is None else tuple(stop_tokens),
                       out_rows=placement.rows(prompts.shape[0] * num_samples))


def audio_rows(audio: dict | None) -> dict[str, np.ndarray]:
    """The rows' audio clips as batch fields ({} for text prompts)."""
    return {} if audio is None else {k: np.asarray(audio[k]) for k in AUDIO_KEYS}


def stack_ids(sequences, width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length id sequences as right-padded [n, width] int32 and their lengths."""
    out = np.full((len(sequences), width), pad_id, np.int32)
    lengths = np.zeros((len(sequences),), np.int32)
    for i, ids in enumerate(sequences):
        ids = np.asarray(ids).reshape(-1)
        if ids.size > width:
            raise ValueError(f"sequence {i}: expected at most {width} ids, got {ids.size}")
        out[i, :ids.size], lengths[i] = ids, ids.size
    return out, lengths


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
    audio = [rows.get(prefix + k) for k in AUDIO_KEYS]  # None: text-only
    return model.apply({"params": params}, get("tokens"), get("positions"), get("segment_ids"),
                       *audio)


def forward_fields(rows: dict, prefix: str = "") -> dict:
    """The {prefix}fields of `rows` that `forward` and `token_logps` read (the row layout's
    and the audio prompts'), without the rest of a batch (rewards, other rows' fields)."""
    keys = (prefix + k for k in (*ROW_KEYS, *AUDIO_KEYS))
    return {k: rows[k] for k in keys if k in rows}


def token_logps(model: UnifiedAudioLM, params, rows: dict, prefix: str = "") -> jax.Array:
    """Per-token logps [R, W] of the targets under `params`, 0 off the completion mask."""
    out = forward(model, params, rows, prefix)
    return sequence_logprobs(out["logits"], rows[prefix + "targets"], rows[prefix + "mask"])


@functools.partial(jax.jit, static_argnames=("model", "prefix"))
def _score(model: UnifiedAudioLM, params, rows: dict, prefix: str) -> jax.Array:
    return token_logps(model, params, rows, prefix)


def score(model: UnifiedAudioLM, params, rows: dict, prefix: str = "") -> np.ndarray:
    """`token_logps` on the params' mesh (rows split over its batch axes), as host [R, W]: the
    same apply function for policy, reference and old policy."""
    return np.asarray(on_params_mesh(_score, model, params, rows, prefix=prefix))


def on_params_mesh(fn, model: UnifiedAudioLM, params, rows: dict, **static):
    """fn(model, params, rows, **static) — a jitted function of packed rows — run where the
    params live, with the rows placed beside them (Placement)."""
    placement = Placement.of(params)
    rows = placement.put({k: np.asarray(v) for k, v in rows.items()})
    with placement.activate():
        return fn(model, params, rows, **static)


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
