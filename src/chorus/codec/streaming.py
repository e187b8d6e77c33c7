"""Chunked detokenization: codes arrive in chunks, waveform leaves in chunks.

Flow stage, chunk k (codes [kC, (k+1)C), needs codes up to (k+1)C + flow lookahead):
  the vector field is causal, so each Euler step only needs the previous R frames of that
  step's x (R = its receptive field). Those are cached per step, which makes the streamed mel
  identical to the offline mel. The conditioning is recomputed on a code window that covers
  its own (symmetric) reach.
Vocoder stage, chunk k (right after flow chunk k): mel window
  [4kC - D - Cv, 4(k+1)C) -> wave for frames [4kC - D, 4(k+1)C - D) plus `crossfade` samples
  beyond, which are blended (linear fade) with the start of the next chunk's wave. D is the
  vocoder lookahead, Cv its left context. With D, Cv >= its receptive field (+ iSTFT reach and
  the cross-fade), the streamed wave equals the offline wave; smaller values trade
  agreement near chunk edges for latency, and the cross-fade hides the seams.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from chorus.codec import flow
from chorus.codec.compile import jit
from chorus.codec.config import StreamingConfig

FRAMES_PER_CODE = 4


class StreamingDetokenizer:
    def __init__(self, codec, speaker, steps, guidance, seed: int, cfg: StreamingConfig):
        self.codec = codec
        self.cfg = cfg
        self.spk = jnp.asarray(codec.resolve_speaker(speaker))[None]
        self.steps, self.guidance = codec.flow_settings(steps, guidance)
        self.key = jax.random.PRNGKey(seed)
        fcfg = codec.cfg.flow
        self.hop = codec.cfg.mel.hop_length
        self.lookahead = fcfg.lookahead_codes
        self.field_context = fcfg.receptive_frames  # R frames
        self.context_codes = math.ceil(self.field_context / FRAMES_PER_CODE)
        self.n_mels = codec.cfg.mel.n_mels
        self.codes = np.zeros((0,), np.int32)
        self.mel = np.zeros((0, self.n_mels), np.float32)  # normalized, all generated frames
        self.cache = jnp.zeros((self.steps, 1, self.field_context, self.n_mels))
        self.flow_chunks = 0
        self.vocoder_chunks = 0
        self.emitted = 0  # samples finalized so far
        self.tail = np.zeros((0,), np.float32)  # samples from `emitted` awaiting cross-fade
        self.finished = False
        self._flow_fn = _flow_chunk_fn(codec, self.steps, self.guidance)
        self._vocode_fn = codec._vocode_fn

    # ------------------------------------------------------------------ public

    @property
    def algorithmic_latency_codes(self) -> int:
        """Codes that must exist before the first flow chunk can run."""
        return self.cfg.chunk_codes + self.lookahead

    def push(self, codes: np.ndarray) -> np.ndarray:
        """Adds codes; returns the waveform that became final (possibly empty)."""
        if self.finished:
            raise RuntimeError("StreamingDetokenizer.push: the stream was already flushed")
        codes = self.codec.check_codes(codes, "streamed codes") if np.size(codes) else \
            np.zeros((0,), np.int32)
        self.codes = np.concatenate([self.codes, codes])
        out = []
        c = self.cfg.chunk_codes
        while self.codes.size >= (self.flow_chunks + 1) * c + self.lookahead:
            out.append(self._step(final=False))
        return _concat(out)

    def flush(self) -> np.ndarray:
        """Ends the stream; returns the remaining waveform."""
        if self.finished:
            return np.zeros((0,), np.float32)
        self.finished = True
        if self.codes.size == 0:
            raise ValueError("streamed codes: length: expected at least 1 code, got 0")
        out = []
        c = self.cfg.chunk_codes
        while self.flow_chunks * c < self.codes.size:
            out.append(self._step(final=True))
        total = self.codes.size * FRAMES_PER_CODE * self.hop
        while self.emitted < total:
            out.append(self._vocoder_chunk(final=True))
        return _concat(out)

    # ------------------------------------------------------------------ stages

    def _step(self, final: bool) -> np.ndarray:
        self._flow_chunk(final)
        return self._vocoder_chunk(final)

    def _flow_chunk(self, final: bool) -> None:
        c, k = self.cfg.chunk_codes, self.flow_chunks
        la, rc = self.lookahead, self.context_codes
        total = self.codes.size if final else None
        # Code window [kC - rc - la, (k+1)C + la): conditioning for context + chunk codes.
        lo = k * c - rc - la
        window, wmask = _window(self.codes, lo, c + rc + 2 * la, total)
        # Frame mask over [4kC - R, 4(k+1)C): frames that exist (and, when final, end in time).
        r = self.field_context
        first = k * c * FRAMES_PER_CODE - r
        frames = np.arange(first, first + r + c * FRAMES_PER_CODE)
        limit = total * FRAMES_PER_CODE if final else np.inf
        fmask = ((frames >= 0) & (frames < limit)).astype(np.float32)[None]
        mel, self.cache = self._flow_fn(self.codec.network_params("flow"),
                                        jnp.asarray(window)[None], jnp.asarray(wmask)[None],
                                        self.spk, self.key, k * c, self.cache,
                                        jnp.asarray(fmask), span_codes=c)
        keep = c * FRAMES_PER_CODE
        if final:
            keep = min(keep, total * FRAMES_PER_CODE - k * c * FRAMES_PER_CODE)
        self.mel = np.concatenate([self.mel, np.asarray(mel[0, :keep])])
        self.flow_chunks += 1

    def _vocoder_chunk(self, final: bool) -> np.ndarray:
        cfg, hop = self.cfg, self.hop
        span = cfg.chunk_codes * FRAMES_PER_CODE
        d, cv = cfg.vocoder_lookahead_frames, cfg.vocoder_context_frames
        start = self.vocoder_chunks * span - d  # first frame this chunk emits
        lo = start - cv
        length = cv + span + d
        frames = np.arange(lo, lo + length)
        have = self.mel.shape[0]
        valid = (frames >= 0) & (frames < have)
        mel = np.zeros((1, length, self.n_mels), np.float32)
        mel[0, valid] = self.mel[frames[valid]]
        wave = np.asarray(self._vocode_fn(self.codec.network_params("vocoder"), mel,
                                          valid.astype(np.float32)[None]))[0]
        self.vocoder_chunks += 1
        # Segment [start, start + span) frames plus the cross-fade extension, in samples.
        seg_start = start * hop
        seg = wave[cv * hop:(cv + span) * hop + cfg.crossfade_samples]
        end = (start + span) * hop
        total = self.codes.size * FRAMES_PER_CODE * hop if final else None
        if total is not None:
            end = min(end, total)
            seg = seg[:max(total - seg_start, 0)]
        return self._emit(seg, seg_start, end)

    def _emit(self, seg: np.ndarray, seg_start: int, end: int) -> np.ndarray:
        """Blends the held tail into `seg` and returns samples [emitted, end)."""
        offset = self.emitted - seg_start  # samples of seg before `emitted` are dropped
        if offset < 0:
            raise AssertionError("streaming: a chunk started after the emitted audio")
        seg = seg[offset:].copy()
        n = min(self.tail.size, seg.size)
        if n:
            fade = (np.arange(n) + 0.5) / n
            seg[:n] = self.tail[:n] * (1 - fade) + seg[:n] * fade
        stop = max(end - self.emitted, 0)
        out = seg[:stop]
        self.tail = seg[stop:]
        self.emitted += out.size
        return out


def _window(codes: np.ndarray, lo: int, length: int, total: int | None):
    """codes[lo:lo+length] with zeros (mask 0) outside [0, available or total)."""
    idx = np.arange(lo, lo + length)
    limit = codes.size if total is None else total
    valid = (idx >= 0) & (idx < limit)
    window = np.zeros((length,), np.int32)
    window[valid] = codes[idx[valid]]
    return window, valid.astype(np.float32)


def _flow_chunk_fn(codec, steps: int, guidance: float):
    """jit(params, code window, mask, spk, noise key, first code, cache, frame mask, span)
    -> (mel chunk, new cache).

    Cached on the codec so that every stream after the first runs compiled code.
    """
    cache_key = ("stream_flow", steps, guidance)
    if cache_key not in codec._sample_fns:
        codec._sample_fns[cache_key] = _build_flow_chunk_fn(codec, steps, guidance)
    return codec._sample_fns[cache_key]


def _build_flow_chunk_fn(codec, steps: int, guidance: float):
    model = codec.models.flow
    fcfg = codec.cfg.flow
    r = fcfg.receptive_frames
    ts = flow.time_grid(steps, fcfg.time_schedule)

    def run(params, window, wmask, spk, key, first_code, cache, fmask, span_codes):
        noise = flow.frame_noise(key, first_code, span_codes, codec.cfg.mel.n_mels)[None]
        mu = model.apply({"params": params}, window, wmask, spk, method=type(model).condition)
        # mu covers the window's codes; keep the frames of [chunk start - R, chunk end).
        span = noise.shape[1]
        la_frames = fcfg.lookahead_codes * FRAMES_PER_CODE
        mu = mu[:, mu.shape[1] - la_frames - span - r: mu.shape[1] - la_frames]
        prior = model.apply({"params": params}, mu[:, r:], method=type(model).prior)
        x = flow.start_point(fcfg, prior, noise)
        new_cache = []
        for i in range(steps):
            xw = jnp.concatenate([cache[i], x], axis=1)
            t = jnp.full((1,), ts[i])
            v = flow.guided_velocity(model, params, xw, mu, t, fmask, guidance)[:, r:]
            new_cache.append(xw[:, xw.shape[1] - r:])
            x = x + (ts[i + 1] - ts[i]) * v
        return x, jnp.stack(new_cache)

    return jit(run, static_argnames=("span_codes",))


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if p.size]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0,), np.float32)
