"""A realtime spoken-dialogue session: user audio streams into the KV cache as it arrives, and
the answer (text, then speech) streams out.

    session = Session(model, params, tokenizer, codec, card.text(), speaker=card.voice)
    for chunk in microphone():              # any length of 16 kHz float samples
        session.push_audio(chunk)           # (with SessionConfig.vad the VAD ends the turn)
    session.end_turn()                      # explicit end of speech
    for event in session.respond():         # TextEvent ..., AudioEvent ..., EndEvent
        ...

Token layout (DESIGN.md's realtime regime, what `DialogueRegime` trains on):

    <chat> <persona> card                                          the system context, kept
    <user> <audio>xF <assistant> text ... <tts_start> codes ... <tts_end>      one turn

While the user speaks, every 80 ms of final log-mel (`StreamingLogMel`, frame-exact with the
offline features) goes through the chunked-causal encoder (`StreamingEncoder`, carried state),
and each adaptor frame that became final is appended to the cache with `UnifiedAudioLM.extend`.
At end of speech only the tail is left: the last (padded, masked) 80 ms piece, the encoder's
open chunk, and one extend of those frames + `<assistant>`. The cache then holds what a
prefill of the whole prompt with the whole clip holds (tested), so the answer is the offline
one. How long the user spoke does not change that tail.

Decoding follows a grammar, as an allowed-id mask per step: text ids or `<tts_start>` (only
`<tts_start>` after max_text_tokens), then audio codes (a code first; `<tts_end>` allowed
after it, forced after max_codes). Every sampled token is decoded into the cache at once, so
at `<tts_end>` the cache holds the whole answer. Codes go to the codec's streaming
detokenizer (`Codec.stream`) as they are sampled, chunk by chunk, so the first audio packet
leaves after chunk_codes + lookahead codes, long before the answer ends.

Barge-in: `push_audio` while an answer is being produced (without a VAD: any audio; with one:
once it hears speech start) stops the answer. Choice: the answer's tokens so far STAY in the
history, closed as a turn is (`<tts_end>`, or `<tts_start> <tts_end>` if no code was sampled
yet): the assistant knows what it had begun to say, and the stream keeps the training layout.
The iterator then yields a BargeInEvent and ends; the new audio opens the next turn.

Context limit: before a turn opens, its worst case (max_turn_seconds of audio, max_text_tokens,
max_codes, the markers) must fit in the cache; if not, the oldest turns are evicted and the
persona card + the kept turns are re-prefilled (one extend into an empty cache, with the kept
turns' adaptor frames: no audio is re-encoded).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Iterator
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from chorus.audio.resample import SAMPLE_RATE
from chorus.audio.vad import VadConfig, VoiceActivityDetector
from chorus.decoding.filtering import sampling_logits
from chorus.decoding.inputs import at_last
from chorus.model.audio_encoder import stream_output_frames
from chorus.model.streaming_encoder import StreamingEncoder
from chorus.model.unified import KVCache, UnifiedAudioLM, init_cache
from chorus.vocab import MEL_FRAMES_PER_PLACEHOLDER, VocabLayout, num_audio_placeholders
from experiments.realtime.streaming_mel import StreamingLogMel

PIECE = MEL_FRAMES_PER_PLACEHOLDER  # log-mel frames per encoder push: 80 ms
REFILL_BUCKET = 64  # re-prefill widths are padded to a multiple (few compiled shapes)


@dataclasses.dataclass(frozen=True)
class SessionConfig:
    """max_turn_seconds: the longest user turn (the context reserves room for it);
    max_text_tokens / max_codes: the answer's caps (then <tts_start> / <tts_end> is forced);
    context: cache rows (0 = model.max_seq_len); text_chunk: decode steps per device call in
    the text phase (how often barge-in is checked); temperature 0 = greedy, else sampling with
    top_k / top_p and `seed`; flow_steps / guidance: the detokenizer's (None: the codec's);
    vad: None = turns end only by end_turn()."""

    max_turn_seconds: float = 20.0
    max_text_tokens: int = 64
    max_codes: int = 250
    context: int = 0
    text_chunk: int = 8
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    flow_steps: int | None = None
    guidance: float | None = None
    vad: VadConfig | None = None

    def __post_init__(self):
        def need(ok, field, expected):
            if not ok:
                raise ValueError(f"session.{field}: expected {expected}, got "
                                 f"{getattr(self, field)!r}")

        need(self.max_turn_seconds > 0, "max_turn_seconds", "> 0")
        need(self.max_text_tokens >= 0, "max_text_tokens", ">= 0")
        need(self.max_codes >= 1, "max_codes", ">= 1")
        need(self.context >= 0, "context", ">= 0 (0 = model.max_seq_len)")
        need(self.text_chunk >= 1, "text_chunk", ">= 1")
        need(self.temperature >= 0, "temperature", ">= 0")
        need(self.top_k >= 0, "top_k", ">= 0")
        need(0 < self.top_p <= 1, "top_p", "a value in (0, 1]")
        need(self.flow_steps is None or self.flow_steps >= 1, "flow_steps", "None or >= 1")
        need(self.vad is None or isinstance(self.vad, VadConfig), "vad", "None or a VadConfig")


# ----------------------------------------------------------------------------- events


@dataclasses.dataclass(frozen=True)
class Latency:
    """One turn's times in ms from the end of user speech (end_turn, or the VAD's decision)."""

    speech_s: float  # how long the user's turn was
    encoder_tail_ms: float  # last log-mel frames + last 80 ms piece + the encoder's open chunk
    prefill_ms: float  # the tail's extend (last frames + <assistant>) -> first logits
    text_decode_ms: float  # the text (inner monologue) through <tts_start>
    first_code_chunk_ms: float  # codes until the detokenizer can run its first chunk
    detokenizer_ms: float  # those codes -> the first audio samples
    first_audio_ms: float  # end of speech -> first audio sample out (the sum)
    answer_ms: float  # end of speech -> the last sample out


@dataclasses.dataclass(frozen=True)
class TurnResult:
    index: int
    text: str
    text_ids: np.ndarray
    codes: np.ndarray
    wave: np.ndarray  # the answer's audio, the packets joined (16 kHz float32)
    barged_in: bool
    latency: Latency | None  # None when the answer was cut before its first packet


@dataclasses.dataclass(frozen=True)
class TextEvent:
    kind: ClassVar[str] = "text"
    token: int
    text: str  # the answer's text so far
    t: float  # seconds since end of speech


@dataclasses.dataclass(frozen=True)
class AudioEvent:
    kind: ClassVar[str] = "audio"
    samples: np.ndarray
    codes_sampled: int
    t: float


@dataclasses.dataclass(frozen=True)
class EndEvent:
    kind: ClassVar[str] = "end"
    turn: TurnResult
    t: float


@dataclasses.dataclass(frozen=True)
class BargeInEvent:
    kind: ClassVar[str] = "barge_in"
    turn: TurnResult
    t: float


# ----------------------------------------------------------------------------- device code


@functools.partial(jax.jit, static_argnums=0)
def _extend(model, params, tokens, lengths, cache, frames, frame_mask):
    """extend + the logits at each row's last new token."""
    logits, _, cache = model.apply({"params": params}, tokens, lengths, cache,
                                   audio_frames=frames, audio_frame_mask=frame_mask,
                                   method=UnifiedAudioLM.extend)
    return at_last(logits, lengths), cache


@dataclasses.dataclass(frozen=True)
class _Grammar:
    """The static part of the answer loop."""

    max_text: int
    max_codes: int
    start_id: int
    end_id: int
    temperature: float
    top_k: int
    top_p: float


@flax.struct.dataclass
class _Answer:
    cache: KVCache
    logits: jax.Array  # [1, V] next-token logits
    tokens: jax.Array  # [N] the answer so far
    num_out: jax.Array  # [] tokens sampled (= decoded into the cache)
    num_text: jax.Array
    num_codes: jax.Array
    speaking: jax.Array  # [] bool: <tts_start> sampled
    done: jax.Array  # [] bool: <tts_end> sampled


def _answer_steps(model, params, s: _Answer, until_out, until_codes, masks, key,
                  grammar: _Grammar) -> _Answer:
    """Sample + decode steps until <tts_end>, the phase changes, num_out reaches until_out or
    num_codes reaches until_codes. masks [5, V]: text|start, start, codes, codes|end, end."""
    g = grammar

    def body(s: _Answer) -> _Answer:
        text_mask = jnp.where(s.num_text >= g.max_text, masks[1], masks[0])
        code_mask = jnp.where(s.num_codes == 0, masks[2],
                              jnp.where(s.num_codes >= g.max_codes, masks[4], masks[3]))
        logits = jnp.where(jnp.where(s.speaking, code_mask, text_mask), s.logits[0], -jnp.inf)
        if g.temperature == 0:
            token = jnp.argmax(logits).astype(jnp.int32)
        else:
            token = jax.random.categorical(
                jax.random.fold_in(key, s.num_out),
                sampling_logits(logits[None], g.temperature, g.top_k, g.top_p)[0])
            token = token.astype(jnp.int32)
        starts = ~s.speaking & (token == g.start_id)
        ends = s.speaking & (token == g.end_id)
        next_logits, _, cache = model.apply({"params": params}, token[None, None], s.cache,
                                            method=UnifiedAudioLM.decode)
        return s.replace(cache=cache, logits=next_logits[:, 0],
                         tokens=s.tokens.at[s.num_out].set(token), num_out=s.num_out + 1,
                         num_text=s.num_text + (~s.speaking & ~starts),
                         num_codes=s.num_codes + (s.speaking & ~ends),
                         speaking=s.speaking | starts, done=ends)

    phase = s.speaking
    return jax.lax.while_loop(
        lambda x: ~x.done & (x.speaking == phase) & (x.num_out < until_out)
        & (x.num_codes < until_codes), body, s)


_answer_jit = jax.jit(_answer_steps, static_argnames=("model", "grammar"))


# ----------------------------------------------------------------------------- host state


@dataclasses.dataclass
class _Turn:
    """A turn in the history: its tokens (as the cache holds them) and adaptor frames."""

    tokens: list[int]
    frames: np.ndarray  # [F, d], F = the turn's <audio> placeholders


@dataclasses.dataclass
class _OpenTurn:
    mel: StreamingLogMel
    encoder: StreamingEncoder
    pending: np.ndarray  # final log-mel frames not pushed to the encoder yet
    samples: int = 0
    mel_frames: int = 0
    frames: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Ready:
    logits: jax.Array
    tokens: list[int]
    frames: np.ndarray
    t_end: float
    speech_s: float
    encoder_tail_ms: float
    prefill_ms: float


@dataclasses.dataclass
class _Live:
    state: _Answer
    ready: _Ready
    packets: list = dataclasses.field(default_factory=list)  # audio sent so far
    result: TurnResult | None = None  # set when a barge-in closed it


class Session:
    """One conversation: a persona, a model that speaks text then codes, a codec."""

    def __init__(self, model: UnifiedAudioLM, params, tokenizer, codec, persona: str,
                 speaker=None, config: SessionConfig | None = None):
        """tokenizer: encode(str) -> ids, decode(ids) -> str; codec: a chorus Codec (its
        streaming detokenizer speaks the codes); persona: the card's text; speaker: the
        codec voice (a name, an embedding, or None for its first voice)."""
        self.model, self.params, self.tokenizer, self.codec = model, params, tokenizer, codec
        self.config = config = config or SessionConfig()
        m, audio = model.config.model, model.config.audio
        self.layout = layout = VocabLayout.from_model_config(m)
        if audio.chunk_size <= 0:
            raise ValueError(f"audio.chunk_size: expected > 0 (a chunked-causal encoder) to "
                             f"stream the user's audio, got {audio.chunk_size}")
        if codec.cfg.fsq.num_codes != layout.num_audio_codes:
            raise ValueError(f"codec: num_codes={codec.cfg.fsq.num_codes} != the model's "
                             f"model.num_audio_codes={layout.num_audio_codes}; use the codec "
                             f"whose codes the model speaks")
        self.speaker = codec.resolve_speaker(speaker)
        self.capacity = config.context or m.max_seq_len
        self.system = [layout.special("<chat>"), layout.special("<persona>"),
                       *map(int, tokenizer.encode(persona))]
        self.max_turn_samples = int(config.max_turn_seconds * SAMPLE_RATE)
        mel_frames = math.ceil(self.max_turn_samples / 160 / PIECE) * PIECE
        if mel_frames // 4 > audio.max_frames:
            raise ValueError(f"session.max_turn_seconds: expected <= "
                             f"{audio.max_frames * 4 / 100:g} (audio.max_frames="
                             f"{audio.max_frames}), got {config.max_turn_seconds}")
        self.answer_width = config.max_text_tokens + 1 + config.max_codes + 1
        self.piece_width = stream_output_frames(audio, PIECE)
        self.tail_width = 2 * self.piece_width + (audio.chunk_size + 1) // 2 + 1
        # <tts_start> <tts_end> closing a cut answer, <user>, the frames, <assistant>, the
        # answer, and the padding rows a last extend window may write past them.
        self.turn_budget = (3 + num_audio_placeholders(mel_frames) + 1 + self.answer_width
                            + self.tail_width)
        if len(self.system) + self.turn_budget > self.capacity:
            raise ValueError(f"session context: expected >= {len(self.system) + self.turn_budget}"
                             f" rows (persona card {len(self.system)} tokens + one turn's worst "
                             f"case {self.turn_budget}), got {self.capacity}; shorten "
                             f"session.max_turn_seconds / max_codes or raise session.context")
        self.grammar = _Grammar(config.max_text_tokens, config.max_codes,
                                layout.special("<tts_start>"), layout.special("<tts_end>"),
                                config.temperature, config.top_k, config.top_p)
        self.masks = jnp.asarray(self._masks())
        self.key = jax.random.PRNGKey(config.seed)
        self.vad = VoiceActivityDetector(config.vad) if config.vad else None
        self.turns: list[_Turn] = []
        self.evicted = 0  # turns dropped from the context so far
        self.results: list[TurnResult] = []
        self._open: _OpenTurn | None = None
        self._ready: _Ready | None = None
        self._live: _Live | None = None
        self._vad_buffer = np.zeros((0,), np.float32)  # samples from stream index _vad_base
        self._vad_base = 0
        self._refill()

    # ------------------------------------------------------------------ the cache

    @property
    def length(self) -> int:
        """Cache rows in use (host copy)."""
        return self._length

    def _masks(self) -> np.ndarray:
        v, layout = self.layout.size, self.layout
        masks = np.zeros((5, v), bool)
        codes = layout.audio_code_ids(np.arange(layout.num_audio_codes))
        masks[0, :layout.text_size] = True
        masks[0:2, self.grammar.start_id] = True
        masks[2:4, codes] = True
        masks[3:5, self.grammar.end_id] = True
        return masks

    def _run_extend(self, tokens: list[int], frames: np.ndarray | None = None, width=None):
        """Appends `tokens` (its placeholders take `frames` [F, d] in order) at the cache's
        length; returns the logits after the last one."""
        n = len(tokens)
        width = width or n
        if self._length + width > self.capacity:
            raise ValueError(f"session context: expected >= {self._length + width} rows, got "
                             f"{self.capacity}")
        window = np.full((1, width), self.layout.pad_id, np.int32)
        window[0, :n] = tokens
        d = self.model.config.model.d_model
        f = max(1, width)
        buf, mask = np.zeros((1, f, d), np.float32), np.zeros((1, f), bool)
        if frames is not None and len(frames):
            buf[0, :len(frames)], mask[0, :len(frames)] = frames, True
        logits, self.cache = _extend(self.model, self.params, jnp.asarray(window),
                                     jnp.asarray([n], jnp.int32), self.cache, jnp.asarray(buf),
                                     jnp.asarray(mask))
        self._length += n
        return logits

    def _refill(self) -> None:
        """A fresh cache holding the persona card and the kept turns (one extend)."""
        self.cache = init_cache(self.model.config, 1, self.capacity)
        self._length = 0
        tokens = self.system + [t for turn in self.turns for t in turn.tokens]
        frames = [turn.frames for turn in self.turns]
        frames = np.concatenate(frames) if frames else None
        width = min(-(-len(tokens) // REFILL_BUCKET) * REFILL_BUCKET, self.capacity)
        self._run_extend(tokens, frames, width)

    def _make_room(self) -> None:
        """Evicts the oldest turns until one more worst-case turn fits."""
        if self._length + self.turn_budget <= self.capacity:
            return
        keep = list(self.turns)
        size = len(self.system) + sum(len(t.tokens) for t in keep)
        while keep and size + self.turn_budget > self.capacity:
            size -= len(keep.pop(0).tokens)
            self.evicted += 1
        self.turns = keep
        self._refill()

    # ------------------------------------------------------------------ user audio

    @property
    def next_logits(self):
        """[1, V] logits after the ended turn's <assistant> (the answer's first token is
        chosen from these), or None."""
        return None if self._ready is None else self._ready.logits

    @property
    def turn_ready(self) -> bool:
        """An ended user turn waits for respond()."""
        return self._ready is not None

    def push_audio(self, chunk) -> list:
        """16 kHz float samples (1-D, any length) as they arrive. Returns the VAD's events
        (an "end" event means the turn ended: call respond()). During an answer this is a
        barge-in (with a VAD: once speech starts)."""
        chunk = np.asarray(chunk, np.float32)
        if chunk.ndim != 1:
            raise ValueError(f"push_audio: expected a 1-D array of 16 kHz samples, got shape "
                             f"{chunk.shape}")
        if self.vad is None:
            if self._ready is not None:
                raise ValueError("push_audio: the ended turn awaits respond()")
            self._barge_in()
            if self._open is None:
                self._begin_turn()
            self._feed(chunk)
            return []
        events = self.vad.push(chunk)
        self._vad_buffer = np.concatenate([self._vad_buffer, chunk])
        for event in events:
            if event.kind == "start":
                self._barge_in()
                if self._ready is not None:
                    raise ValueError("push_audio: speech started while the ended turn awaits "
                                     "respond()")
                self._begin_turn()
                self._consume(event.sample)  # drop the silence before the speech
            else:
                self._feed(self._consume(event.detected_at))
                self.end_turn()
        if self._open is not None:
            self._feed(self._consume(self._vad_base + self._vad_buffer.size))
        else:  # idle: keep what a turn opening later may start with
            keep = (self.vad.config.speech_frames + 1) * self.vad.config.frame_samples
            self._consume(self._vad_base + max(0, self._vad_buffer.size - keep))
        return events

    def _consume(self, upto: int) -> np.ndarray:
        """The VAD-buffered samples before stream index `upto` (removed from the buffer)."""
        n = max(0, upto - self._vad_base)
        out, self._vad_buffer = self._vad_buffer[:n], self._vad_buffer[n:]
        self._vad_base += n
        return out

    def _begin_turn(self) -> None:
        self._make_room()
        self._run_extend([self.layout.special("<user>")])
        self._open = _OpenTurn(StreamingLogMel(), StreamingEncoder(self.model, self.params, 1),
                               np.zeros((0, self.model.config.audio.n_mels), np.float32))

    def _feed(self, samples: np.ndarray) -> None:
        turn = self._open
        if turn.samples + samples.size > self.max_turn_samples:
            raise ValueError(f"user turn: {(turn.samples + samples.size) / SAMPLE_RATE:.2f} s "
                             f"exceed session.max_turn_seconds={self.config.max_turn_seconds}")
        turn.samples += samples.size
        turn.pending = np.concatenate([turn.pending, turn.mel.push(samples)])
        while len(turn.pending) >= PIECE:
            piece, turn.pending = turn.pending[:PIECE], turn.pending[PIECE:]
            self._extend_frames(self._push_piece(piece))

    def _push_piece(self, piece: np.ndarray) -> np.ndarray:
        """One 80 ms piece (< 8 frames: the padded, masked last one) through the encoder;
        returns the adaptor frames that became final [k, d]."""
        turn, n = self._open, len(piece)
        turn.mel_frames += n
        mel = np.zeros((1, PIECE, piece.shape[1]), np.float32)
        mel[0, :n] = piece
        frames, mask = turn.encoder.push(mel, np.arange(PIECE)[None] < n)
        return _valid(frames, mask)

    def _extend_frames(self, frames: np.ndarray) -> None:
        if len(frames):
            self._run_extend([self.layout.audio_placeholder_id] * len(frames), frames,
                             self.piece_width)
            self._open.frames.append(frames)

    def end_turn(self) -> None:
        """End of user speech: the tail (last piece, the encoder's open chunk, <assistant>)
        goes into the cache; respond() then answers."""
        turn = self._open
        if turn is None:
            raise ValueError("end_turn: no user turn is open (push audio first)")
        t0 = time.perf_counter()
        pending = np.concatenate([turn.pending, turn.mel.flush()])
        if turn.mel_frames + len(pending) == 0:
            raise ValueError(f"end_turn: the turn holds {turn.samples} samples; expected at "
                             f"least 160 (one 10 ms log-mel frame)")
        tail = [self._push_piece(pending[i:i + PIECE]) for i in range(0, len(pending), PIECE)]
        tail.append(_valid(*turn.encoder.flush()))
        tail = np.concatenate(tail)
        t1 = time.perf_counter()
        logits = self._run_extend([self.layout.audio_placeholder_id] * len(tail)
                                  + [self.layout.special("<assistant>")], tail, self.tail_width)
        jax.block_until_ready(logits)
        t2 = time.perf_counter()
        frames = np.concatenate(turn.frames + [tail])
        tokens = ([self.layout.special("<user>")] + [self.layout.audio_placeholder_id]
                  * len(frames) + [self.layout.special("<assistant>")])
        self._open = None
        self._ready = _Ready(logits, tokens, frames, t0, turn.samples / SAMPLE_RATE,
                             1e3 * (t1 - t0), 1e3 * (t2 - t1))

    # ------------------------------------------------------------------ the answer

    def respond(self) -> Iterator:
        """The answer to the ended turn: TextEvent per text token, AudioEvent per packet,
        then EndEvent (or BargeInEvent if push_audio cut it)."""
        if self._ready is None:
            raise ValueError("respond: no ended user turn (call end_turn(), or let the VAD "
                             "end one)")
        ready, self._ready = self._ready, None
        return self._answer(ready)

    def _answer(self, ready: _Ready) -> Iterator:
        z = jnp.zeros((), jnp.int32)
        live = self._live = _Live(_Answer(
            cache=self.cache, logits=ready.logits,
            tokens=jnp.zeros((self.answer_width,), jnp.int32), num_out=z, num_text=z,
            num_codes=z, speaking=jnp.zeros((), bool), done=jnp.zeros((), bool)), ready)
        big = self.answer_width + 1
        since = lambda: time.perf_counter() - ready.t_end  # noqa: E731
        t = {}
        emitted = num_out = 0
        while True:  # text, through <tts_start>
            self._step(num_out + self.config.text_chunk, big)
            tokens, num_out, speaking, done = self._fetch()
            text_ids = [int(x) for x in tokens[:num_out] if x < self.layout.text_size]
            for i in range(emitted, len(text_ids)):
                yield TextEvent(text_ids[i], self.tokenizer.decode(text_ids[:i + 1]), since())
                if live.result is not None:
                    yield BargeInEvent(live.result, since())
                    return
            emitted = len(text_ids)
            if speaking or done:
                break
        t["text"] = since()
        detok = self.codec.stream(speaker=self.speaker, steps=self.config.flow_steps,
                                  guidance=self.config.guidance, seed=self.config.seed)
        target, chunk = detok.algorithmic_latency_codes, detok.cfg.chunk_codes
        pushed, packets, detok_s = 0, live.packets, 0.0
        while True:  # codes, chunk by chunk, into the detokenizer
            self._step(big, target)
            tokens, num_out, _, done = self._fetch()
            codes = self.layout.ids_to_audio_codes(
                tokens[len(text_ids) + 1:num_out - int(done)]).astype(np.int32)
            start = time.perf_counter()
            parts = [detok.push(codes[pushed:])]
            pushed = codes.size
            if done:
                parts.append(detok.flush())
            detok_s += time.perf_counter() - start
            for part in parts:
                if part.size:
                    if "audio" not in t:
                        t["audio"], t["detok"] = since(), detok_s
                    packets.append(part)
                    yield AudioEvent(part, codes.size + int(done), since())
                    if live.result is not None:
                        yield BargeInEvent(live.result, since())
                        return
            if done:
                break
            target += chunk
        end = since()
        result = self._close(live, [], _latency(ready, t, end), packets, barged_in=False)
        yield EndEvent(result, end)

    def _step(self, until_out: int, until_codes: int) -> None:
        live = self._live
        live.state = _answer_jit(self.model, self.params, live.state,
                                 jnp.asarray(until_out, jnp.int32),
                                 jnp.asarray(until_codes, jnp.int32), self.masks, self.key,
                                 grammar=self.grammar)

    def _fetch(self):
        s = self._live.state
        tokens, num_out, speaking, done = jax.device_get((s.tokens, s.num_out, s.speaking,
                                                          s.done))
        return tokens, int(num_out), bool(speaking), bool(done)

    def _close(self, live: _Live, closing: list[int], latency, packets, barged_in: bool):
        """The answer joins the history (its tokens are in the cache; `closing` is appended)."""
        tokens, num_out, _, _ = self._fetch()
        answer = [int(x) for x in tokens[:num_out]]
        self.cache, self._length = live.state.cache, self._length + num_out
        self._live = None
        if closing:
            self._run_extend(closing)
        self.turns.append(_Turn(live.ready.tokens + answer + closing, live.ready.frames))
        text_ids = np.asarray([x for x in answer if x < self.layout.text_size], np.int32)
        codes = self.layout.ids_to_audio_codes(
            np.asarray([x for x in answer if self.layout.is_audio_code(x)], np.int32))
        wave = np.concatenate(packets) if packets else np.zeros((0,), np.float32)
        result = TurnResult(len(self.results), self.tokenizer.decode(text_ids.tolist()),
                            text_ids, codes.astype(np.int32), wave.astype(np.float32),
                            barged_in, latency)
        self.results.append(result)
        return result

    def _barge_in(self) -> None:
        """Cuts the answer being produced, if any (see the module doc for what is kept)."""
        live = self._live
        if live is None:
            return
        _, _, speaking, done = self._fetch()
        if done:  # finished on the device; the caller only stopped iterating
            closing = []
        else:
            closing = [self.grammar.end_id] if speaking else [self.grammar.start_id,
                                                              self.grammar.end_id]
        live.result = self._close(live, closing, None, live.packets, barged_in=not done)


MIC_CHUNK = 1280  # 80 ms at 16 kHz: how `play` delivers a recorded question


def play(session: Session, wave: np.ndarray, chunk: int = MIC_CHUNK) -> TurnResult:
    """One turn from a recorded question: `wave` pushed in `chunk`-sample pieces as a
    microphone would deliver them (with a VAD, only until it ends the turn; the rest is not
    this turn), the turn ended if the VAD did not, and the answer's TurnResult."""
    wave = np.asarray(wave, np.float32)
    for i in range(0, wave.size, chunk):
        if session.turn_ready:
            break
        session.push_audio(wave[i:i + chunk])
    if not session.turn_ready:
        session.end_turn()
    return [e for e in session.respond()][-1].turn


def _valid(frames, mask) -> np.ndarray:
    """Row 0's valid adaptor frames (they come first) -> [k, d] on the host."""
    frames, mask = jax.device_get((frames, mask))
    return np.asarray(frames[0, :int(mask[0].sum())], np.float32)


def _latency(ready: _Ready, t: dict, end: float) -> Latency:
    text_ms = 1e3 * t["text"] - ready.encoder_tail_ms - ready.prefill_ms
    detok_ms = 1e3 * t["detok"]
    return Latency(speech_s=ready.speech_s, encoder_tail_ms=ready.encoder_tail_ms,
                   prefill_ms=ready.prefill_ms, text_decode_ms=text_ms,
                   first_code_chunk_ms=1e3 * t["audio"] - detok_ms - 1e3 * t["text"],
                   detokenizer_ms=detok_ms, first_audio_ms=1e3 * t["audio"],
                   answer_ms=1e3 * end)
