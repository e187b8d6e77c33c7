"""Batched transcription: the regime's prompt, verified multi-token decoding, text out.

    transcriber, run = load_transcriber("runs/asr")      # an ASR run, or an RL run of it
    request = transcriber.request(log_mel(wave))         # one clip; pad_requests: a batch
    texts = transcriber.texts(transcriber.decode(request))

Inference needs the run directory alone: params only (`chorus.training.restore.load_run`),
the tokenizer from the run's assets. An RL run (`chorus rl --experiment asr`) exports its
policy as the backbone plus the MTP / CTC heads of the run it started from (frozen
companions), and its settings hold the ASR ones.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import Config, check
from chorus.decoding.beam import beam_search
from chorus.decoding.ctc import (
    CtcGreedy,
    ctc_forced_align,
    ctc_greedy,
    ctc_prefix_beam_search,
    ctc_sequence_logprob,
)
from chorus.decoding.joint import ctc_prefix_scorer
from chorus.decoding.verified import greedy_decode, verified_decode
from chorus.model.unified import AUDIO_OUTPUTS, UnifiedAudioLM
from chorus.vocab import ADAPTOR_STRIDE, MEL_FRAMES_PER_SECOND, VocabLayout
from experiments.asr.ctc_timestamps import FRAME_SECONDS, word_timestamps
from experiments.asr.model import AsrModel
from experiments.asr.regime import asr_prompt
from experiments.asr.settings import asr_settings

MODES = ("verified", "greedy", "prefill", "beam", "ctc", "rescore", "joint", "joint_greedy",
         "joint_beam")


def pad_requests(examples: Sequence[dict], layout: VocabLayout, max_frames: int,
                 width: int | None = None) -> dict:
    """Right-pads prompts and clips to fixed shapes (one compile per batch size). width: the
    prompt columns (default: the longest ASR prompt, that of a max_frames clip)."""
    width = width or len(asr_prompt(layout, max_frames))
    b = len(examples)
    prompts = np.full((b, width), layout.pad_id, np.int32)
    lengths = np.zeros((b,), np.int32)
    feats = np.zeros((b, 1, max_frames, examples[0]["audio_features"].shape[-1]), np.float32)
    mask = np.zeros((b, 1, max_frames), bool)
    for i, ex in enumerate(examples):
        p = np.asarray(ex["prompt_tokens"])
        prompts[i, : len(p)] = p
        lengths[i] = len(p)
        t = min(ex["audio_features"].shape[-2], max_frames)
        feats[i, 0, :t] = ex["audio_features"].reshape(-1, feats.shape[-1])[:t]
        mask[i, 0, :t] = np.asarray(ex["audio_mask"]).reshape(-1)[:t]
    return {"prompts": prompts, "lengths": lengths, "audio_features": feats, "audio_mask": mask}


def text_ids_of(ids, layout: VocabLayout) -> np.ndarray:
    """The text tokens of decoded ids before the first <eos> (specials and audio codes
    dropped), int32."""
    ids = np.asarray(ids)
    stops = np.flatnonzero(ids == layout.eos_id)
    body = ids[:stops[0]] if stops.size else ids
    return body[body < layout.text_size].astype(np.int32)


def text_of(ids, tokenizer, layout: VocabLayout) -> str:
    """The text of decoded ids: the text tokens before the first <eos>."""
    return tokenizer.decode([int(t) for t in text_ids_of(ids, layout)])


@dataclasses.dataclass(frozen=True)
class Rescored:
    """Joint CTC/attention rescoring's pick per row (`Transcriber.rescore`), with its
    candidates: text ids, 0 after lengths[b]."""

    tokens: np.ndarray  # [B, max_new_tokens] int32 text ids of each row's pick
    lengths: np.ndarray  # [B] int32
    candidates: tuple[tuple[int, ...], ...]  # every row's candidates, flattened
    owners: np.ndarray  # [N] the row of each candidate
    decoder_logprob: np.ndarray  # [N] log p_dec(candidate <eos> | prompt)
    ctc_logprob: np.ndarray  # [N] log p_ctc(candidate | audio)

    def picks(self, weight: float) -> list[int]:
        """Per row, the index of its best candidate under `weight`."""
        joint = weight * self.ctc_logprob + (1 - weight) * self.decoder_logprob
        return [max(np.flatnonzero(self.owners == i), key=lambda k: joint[k])
                for i in range(len(self.lengths))]


class Transcriber:
    """Batched transcription: joint CTC/attention decoding when the run has a CTC head, else
    verified decoding (greedy when there are no MTP heads); `decode(mode=...)` picks another."""

    def __init__(self, config: Config, asr: AsrModel, params, tokenizer):
        self.config, self.asr, self.params, self.tokenizer = config, asr, params, tokenizer
        self.layout = VocabLayout.from_model_config(config.model)
        self.max_frames = config.train.max_mel_frames  # the longest clip (train.max_mel_frames)
        k = asr.mtp.num_heads if asr.mtp is not None else 0
        self.settings = dataclasses.replace(config.decode, temperature=0.0, num_draft_tokens=k)

    def request(self, frames: np.ndarray) -> dict:
        """The request of one clip: log-mel `frames` [T, n_mels] (T <= max_frames) behind the
        ASR prompt."""
        return self.requests([frames])

    def requests(self, clips: Sequence[np.ndarray], batch_size: int | None = None) -> dict:
        """One padded request of several clips (each T <= max_frames), padded to
        `batch_size` rows by repeating the last clip (a fixed shape: one compile)."""
        clips = [np.asarray(c) for c in clips]
        for i, c in enumerate(clips):
            if not 1 <= len(c) <= self.max_frames:
                raise ValueError(f"clips[{i}]: expected 1 to {self.max_frames} log-mel frames "
                                 f"(train.max_mel_frames), got {len(c)}")
        if batch_size is not None and not len(clips) <= batch_size:
            raise ValueError(f"clips: expected at most batch_size={batch_size}, got {len(clips)}")
        rows = clips + clips[-1:] * ((batch_size or len(clips)) - len(clips))
        return pad_requests([{"prompt_tokens": asr_prompt(self.layout, len(c)),
                              "audio_features": c, "audio_mask": np.ones(len(c), bool)}
                             for c in rows], self.layout, self.max_frames)

    def decode_rows(self, clips: Sequence[np.ndarray], mode: str | None = None,
                    batch_size: int = 8) -> list[np.ndarray]:
        """Each clip's decoded ids (up to its length), in batches of `batch_size` rows."""
        out = []
        for b in range(0, len(clips), batch_size):
            chunk = clips[b:b + batch_size]
            result = self.decode(self.requests(chunk, batch_size), mode)
            tokens, lengths = np.asarray(result.tokens), np.asarray(result.lengths)
            out += [tokens[r, :lengths[r]] for r in range(len(chunk))]
        return out

    def decode_text_ids(self, clips: Sequence[np.ndarray], mode: str | None = None,
                        batch_size: int = 8) -> list[np.ndarray]:
        """The text ids (text_ids_of) of each clip, decoded in batches of `batch_size` rows."""
        return [text_ids_of(row, self.layout) for row in self.decode_rows(clips, mode,
                                                                          batch_size)]

    def with_decode(self, **changes) -> Transcriber:
        """This transcriber with decode settings changed (e.g. beam_width=4); same params."""
        other = copy.copy(self)
        other.settings = dataclasses.replace(self.settings, **changes)
        return other

    @property
    def default_mode(self) -> str:
        """The decoder a caller gets by default: "joint" for a run with a CTC head (the most
        accurate here, README), else "verified"."""
        return "joint" if self.asr.ctc_weight > 0 else "verified"

    def decode(self, request: dict, mode: str | None = None):
        """mode: `default_mode` when None, "verified" (greedy when there are no heads),
        "greedy", "prefill" (encoder,
        prompt prefill and the first token only: the part both decoders share), "beam" (beam
        search of width decode.beam_width, e.g. `--set decode.beam_width=4`; a BeamResult: the
        best hypothesis, its log-prob and the n-best), "ctc" (`ctc_decode`: the CTC head's
        best path, no decoder), "rescore" (`rescore`: joint CTC/attention rescoring), "joint"
        (verified decoding of the fused CTC/attention scores, decode.joint_weight; the heads'
        drafts judged by the fused scores, so token-identical to "joint_greedy"),
        "joint_greedy" (one token per step under the same scores) or "joint_beam" (beam search
        of width decode.beam_width ranking the joint scores)."""
        mode = self.default_mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")
        if mode == "ctc":
            return self.ctc_decode(request)
        if mode == "rescore":
            return self.rescore(request)
        p = self.params
        args = (jnp.asarray(request["prompts"]), jnp.asarray(request["lengths"]))
        audio = dict(audio_features=jnp.asarray(request["audio_features"]),
                     audio_mask=jnp.asarray(request["audio_mask"]))
        scorer = self.joint_scorer(request) if mode.startswith("joint") else None
        if mode in ("beam", "joint_beam"):
            return beam_search(self.asr.backbone, p["backbone"], *args, self.settings,
                               scorer=scorer, **audio)
        if mode in ("verified", "joint") and self.asr.heads is not None:
            return verified_decode(self.asr.backbone, p["backbone"], self.asr.heads, p["mtp"],
                                   *args, self.settings, scorer=scorer, **audio)
        return greedy_decode(self.asr.backbone, p["backbone"], *args,
                             max_new_tokens=1 if mode == "prefill" else
                             self.settings.max_new_tokens, scorer=scorer, **audio)

    def joint_scorer(self, request: dict):
        """The CTC prefix scorer of a request's audio (decode.joint_weight / joint_candidates):
        the CTC head's logits over the frames `experiment.ctc_frames` names."""
        logits, mask = self.ctc_logits(request)
        return ctc_prefix_scorer(logits, mask, weight=self.settings.joint_weight,
                                 candidates=self.settings.joint_candidates,
                                 ctc_candidates=min(self.settings.joint_ctc_candidates,
                                                    logits.shape[-1] - 1),
                                 end_id=self.layout.eos_id)

    @functools.cached_property
    def _ctc_logits(self):
        check(self.asr.ctc_head is not None and "ctc" in self.params, "experiment.ctc_weight",
              "> 0 in the run's training (mode 'ctc' reads its CTC head)",
              self.asr.ctc_weight)

        @jax.jit
        def logits(params, audio_features, audio_mask):
            encoded = self.asr.backbone.apply(
                {"params": params["backbone"]}, audio_features, audio_mask, True,
                method=UnifiedAudioLM.encode_audio)  # the encoder + adaptor the prompt splices
            frames, frame_mask = self.asr.ctc_inputs(dict(zip(AUDIO_OUTPUTS, encoded,
                                                              strict=True)))
            out = self.asr.ctc_head.apply({"params": params["ctc"]}, frames)
            return out[:, 0], frame_mask[:, 0]  # an ASR request holds one clip per row

        return logits

    @property
    def ctc_frame_seconds(self) -> float:
        """Seconds per frame of the CTC head's logits: 80 ms adaptor or 40 ms encoder frames."""
        return FRAME_SECONDS / (ADAPTOR_STRIDE if self.asr.ctc_frames == "encoder" else 1)

    def ctc_logits(self, request: dict) -> tuple[jax.Array, jax.Array]:
        """(CTC logits [B, F, text_size + 1], frame mask [B, F]) of a request: the audio
        encoder (+ adaptor) and the CTC head only (class 0 = blank, text id t = t + 1); the
        frames are those `experiment.ctc_frames` names (`ctc_frame_seconds` apart)."""
        return self._ctc_logits({k: self.params[k] for k in ("backbone", "ctc")},
                                jnp.asarray(request["audio_features"]),
                                jnp.asarray(request["audio_mask"]))

    def ctc_decode(self, request: dict) -> CtcGreedy:
        """CTC greedy (best path) over the adaptor frames: text ids + per-token frame spans,
        no decoder forward. ConfigError when the run has no CTC head (ctc_weight=0)."""
        return ctc_greedy(*self.ctc_logits(request))

    def rescore(self, request: dict, weight: float | None = None, beam: int | None = None
                ) -> Rescored:
        """Joint CTC/attention rescoring (Watanabe et al. 2017): each row's candidates are the
        decoder's greedy transcript and the CTC prefix beam's `beam` best (decode.rescore_beam),
        ranked by w * log p_ctc(y | x) + (1 - w) * log p_dec(y <eos> | prompt), w = `weight`
        (decode.rescore_weight). log p_ctc is exact (optax's forward algorithm), log p_dec
        teacher-forced in one jitted forward of [B * (beam + 1)] rows."""
        weight = self.settings.rescore_weight if weight is None else weight
        beam = self.settings.rescore_beam if beam is None else beam
        limit = self.settings.max_new_tokens
        greedy = self.decode(request, mode="greedy")
        logits, mask = self.ctc_logits(request)
        log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
        mask = np.asarray(mask)
        rows, owners = [], []
        for i, (lp, m) in enumerate(zip(log_probs, mask, strict=True)):
            cands = {tuple(text_ids_of(np.asarray(greedy.tokens[i, :int(greedy.lengths[i])]),
                                       self.layout).tolist())}
            cands |= {ids for ids, _ in ctc_prefix_beam_search(lp[m], beam)}
            # room for <eos>; a row whose every candidate is too long keeps its shortest, cut
            fitting = [ids for ids in sorted(cands) if len(ids) < limit]
            for ids in fitting or [min(cands, key=len)[:limit - 1]]:
                rows.append(ids)
                owners.append(i)
        owners = np.asarray(owners)
        dec = self.decoder_logprobs(request, owners, rows, slots=len(mask) * (beam + 1))
        labels = np.zeros((len(rows), max(1, max(len(r) for r in rows))), np.int32)
        for k, ids in enumerate(rows):
            labels[k, :len(ids)] = ids
        ctc = np.asarray(ctc_sequence_logprob(logits[owners], mask[owners], labels,
                                              np.array([len(r) for r in rows])), np.float64)
        scored = Rescored(np.zeros((len(mask), limit), np.int32), np.zeros(len(mask), np.int32),
                          tuple(rows), owners, dec, ctc)
        for i, k in enumerate(scored.picks(weight)):
            scored.tokens[i, :len(rows[k])] = rows[k]
            scored.lengths[i] = len(rows[k])
        return scored

    @functools.cached_property
    def _teacher_forced(self):
        from chorus.rl.logprobs import sequence_logprobs

        @jax.jit
        def logprobs(params, tokens, targets, scored, audio_features, audio_mask):
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
            out = self.asr.backbone.apply({"params": params}, tokens, positions,
                                          jnp.ones_like(tokens), audio_features, audio_mask)
            return sequence_logprobs(out["logits"], targets, scored).sum(-1)

        return logprobs

    def decoder_logprobs(self, request: dict, owners: np.ndarray,
                         rows: Sequence[tuple[int, ...]], slots: int | None = None
                         ) -> np.ndarray:
        """[N] log p_dec(ids <eos> | the owner row's prompt), teacher-forced; the forward runs
        on `slots` rows (>= N; padding rows are dropped), so a fixed slot count compiles once."""
        layout, n = self.layout, len(rows)
        slots = n if slots is None else slots
        if slots < n:
            raise ValueError(f"slots: expected >= {n} candidates, got {slots}")
        width = request["prompts"].shape[1] + self.settings.max_new_tokens
        tokens = np.full((slots, width), layout.pad_id, np.int32)
        scored = np.zeros((slots, width), bool)  # positions whose *next* token is scored
        for k, (i, ids) in enumerate(zip(owners, rows, strict=True)):
            length = int(request["lengths"][i])
            seq = [*request["prompts"][i, :length], *ids, layout.eos_id]
            tokens[k, :len(seq)] = seq
            scored[k, length - 1: len(seq) - 1] = True
        targets = np.concatenate([tokens[:, 1:], np.full((slots, 1), layout.pad_id)], axis=1)
        source = np.concatenate([owners, np.zeros(slots - n, owners.dtype)])
        out = self._teacher_forced(self.params["backbone"], jnp.asarray(tokens),
                                   jnp.asarray(targets), jnp.asarray(scored),
                                   jnp.asarray(request["audio_features"][source]),
                                   jnp.asarray(request["audio_mask"][source]))
        return np.asarray(out, np.float64)[:n]

    def word_timestamps(self, request: dict, result: CtcGreedy | None = None
                        ) -> list[list[dict]]:
        """Per row, [{"word", "start", "end"}] in seconds from the CTC alignment (`result`, or
        a fresh `ctc_decode`); ends past the clip's audio are clipped to it."""
        result = self.ctc_decode(request) if result is None else result
        seconds = np.asarray(request["audio_mask"]).reshape(len(result.lengths), -1).sum(
            -1) / MEL_FRAMES_PER_SECOND
        rows = []
        for i, n in enumerate(np.asarray(result.lengths)):
            words = word_timestamps(np.asarray(result.ids[i, :n]),
                                    np.asarray(result.starts[i, :n]),
                                    np.asarray(result.ends[i, :n]), self.tokenizer,
                                    self.ctc_frame_seconds)
            end = float(seconds[i])
            rows.append([{**w, "start": min(w["start"], end), "end": min(w["end"], end)}
                         for w in words])
        return rows

    def aligned_words(self, clips: Sequence[np.ndarray], ids: Sequence[Sequence[int]],
                      keep: Sequence[tuple[int, int]] | None = None, batch_size: int = 8,
                      ) -> list[list[dict] | None]:
        """Per clip, the words of its text ids timed by CTC forced alignment (the most probable
        CTC path that spells exactly these ids, `ctc_forced_align`): any decoder's output gets
        timestamps, not only the CTC head's own. keep: a [lo, hi) of each row's ids whose words
        are returned (the rest still shape the alignment). None for a row whose clip has too
        few frames for its ids."""
        out: list[list[dict] | None] = []
        for b in range(0, len(clips), batch_size):
            chunk = list(clips[b:b + batch_size])
            logits, mask = self.ctc_logits(self.requests(chunk, batch_size))
            log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
            for r in range(len(chunk)):
                row = np.asarray(ids[b + r], np.int64)
                lo, hi = keep[b + r] if keep is not None else (0, len(row))
                try:
                    starts, ends, _ = ctc_forced_align(log_probs[r][np.asarray(mask[r])], row)
                except ValueError:
                    out.append(None)
                    continue
                words = word_timestamps(row[lo:hi], starts[lo:hi], ends[lo:hi], self.tokenizer,
                                        self.ctc_frame_seconds)
                end = len(chunk[r]) / MEL_FRAMES_PER_SECOND
                out.append([{**w, "end": min(w["end"], end)} for w in words])
        return out

    def texts(self, result) -> list[str]:
        tokens, lengths = np.asarray(result.tokens), np.asarray(result.lengths)
        return [text_of(row[:n], self.tokenizer, self.layout)
                for row, n in zip(tokens, lengths, strict=True)]


def timed(fn) -> tuple[Any, float]:
    """(result, seconds) of a decode, waiting for the device."""
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.tokens)
    return out, time.perf_counter() - start


def load_transcriber(workdir: str, overrides: Sequence[str] = (), step: int | None = None,
                     ) -> tuple[Transcriber, Any]:
    """(Transcriber, run) of an ASR or ASR-RL run directory; params only."""
    from chorus.training.restore import asset_path, load_run
    from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer

    run = load_run(workdir, overrides, step=step)
    config = run.config
    asr = AsrModel.build(config, asr_settings(config))
    tokenizer = TextTokenizer.from_file(asset_path(run.workdir, TOKENIZER_FILENAME))
    return Transcriber(config, asr, run.params, tokenizer), run
