"""Text to speech with a trained TTS run: the prompt, code sampling over the KV cache, audio
through the codec (offline, or streamed chunk by chunk).

    synth = Synthesizer.load("runs/tts", codec_run="runs/codec")
    out = synth.synthesize([SpeechRequest("turn on (softly) the light", speaker="en-gb+f3")])
    out[0].wave, out[0].codes, out[0].truncated, out[0].timings.rtf
    stream = synth.stream([SpeechRequest("hello there", speaker="ref.wav")])
    for packet in stream:            # Packet(index, samples): audio before the last code
        play(packet.samples)
    stream.results                   # the same Synthesis objects as synthesize() gives

Codes: the prompt is experiments.tts.prompt.prompt_ids (what training saw); sampling is
restricted to the audio codes and <tts_end> (an allowed-id mask; <tts_end> is refused as the
very first token, so there is always audio), with SpeechDecoding's windowed repetition
penalty (chorus.decoding.constraints), temperature, top-k and top-p. Randomness is per
request and per output position (fold_in of the request's seed with the position, as in
chorus.decoding.generate), and the decode loop is one jitted program that runs until a
dynamic step count: streaming runs it chunk by chunk, offline runs it to the end, and both
produce the same codes. A row ends at <tts_end> or at its length guard
min(ceil(len(text) * max_codes_per_char) + min_codes, context left); one that reaches the guard
is reported as truncated.

Speakers: a catalog voice name (the LM's speaker prompt "speaker <id>" of that voice and the
codec's mean embedding of it), or an audio file (zero-shot: its first
experiment.speaker_clip_seconds enter the LM prompt as the speaker clip, through the audio
encoder, as the other-utterance clips of training did; the codec's speaker embedding of it
conditions the flow detokenizer, CosyVoice style; the LM's speaker text is empty, the case
control dropout trains). None: no LM speaker prompt and the codec's first training voice.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from chorus.audio import mel
from chorus.audio.resample import SAMPLE_RATE
from chorus.codec.features import round_up
from chorus.codec.pipeline import Codec
from chorus.config import Config
from chorus.decoding.constraints import Constraints, check_allowed
from chorus.decoding.filtering import sampling_logits
from chorus.decoding.inputs import at_last, prompt_forward
from chorus.decoding.stopping import stop_array, write_rows
from chorus.model.unified import KVCache, UnifiedAudioLM
from chorus.vocab import VocabLayout
from experiments.tts.prompt import prompt_ids, speaker_prompt
from experiments.tts.settings import SpeechDecoding
from experiments.tts.target import TagError, plain_text

MAX_INSTRUCTION_CHARS = 200
# A speaker clip whose peak stays under 10 steps of 16-bit PCM carries no voice to embed.
SILENCE_PEAK = 10 / 32768
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")
PROMPT_BUCKET = 32  # prompt widths are padded to a multiple (few compiled shapes)
CODES_BUCKET = 128  # so are the output buffers
CLIP_BUCKET = 64  # and the speaker clips (log-mel frames; the encoder takes multiples of 8)


class RequestError(ValueError):
    """A bad request; `field` names what is wrong (text, instruction, speaker, ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class SpeechRequest:
    text: str  # what to say, inline directions allowed ("(softly) good night")
    instruction: str = ""  # how to say it ("a slow female british voice")
    speaker: str | None = None  # a catalog voice name or an audio file path
    seed: int | None = None  # None: SpeechDecoding.seed


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A checked request: its prompt ids, length guard and the detokenizer's speaker."""

    request: SpeechRequest
    prompt: np.ndarray  # int32, ends at <tts_start>
    max_codes: int
    flow_speaker: np.ndarray  # the codec's speaker embedding
    seed: int
    clip: np.ndarray | None = None  # float32 [frames, mels] log-mel of the speaker prompt


@dataclasses.dataclass(frozen=True)
class Timings:
    prefill_s: float  # prompt forward + first code (the batch's)
    decode_s: float  # the remaining decode steps (the batch's)
    per_code_ms: float  # decode_s / the batch's longest row
    detokenize_s: float  # codes -> waveform (this row's; streaming: the chunks' sum)
    total_s: float  # request in -> last sample out
    first_packet_ms: float | None  # request in -> first audio sample out (streaming only)
    rtf: float  # total_s / audio seconds


@dataclasses.dataclass(frozen=True)
class Synthesis:
    wave: np.ndarray  # float32 at 16 kHz
    codes: np.ndarray  # int32 codec codes (<tts_end> dropped)
    truncated: bool  # the length guard ended it, not <tts_end>
    timings: Timings

    @property
    def seconds(self) -> float:
        return self.wave.size / SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class Packet:
    index: int  # which request of the batch
    samples: np.ndarray  # float32 at 16 kHz, the next samples of that request's audio
    codes_sampled: int  # that request's codes sampled when the packet left (<tts_end> too)


# ----------------------------------------------------------------------------- decode loop


@dataclasses.dataclass(frozen=True)
class Sampling:
    """The static part of sampling (part of the compiled program)."""

    temperature: float
    top_k: int
    top_p: float


@flax.struct.dataclass
class DecodeState:
    step: jax.Array  # [] output position of the next sample (the same for every live row)
    cache: KVCache
    logits: jax.Array  # [R, V] next-token logits
    tokens: jax.Array  # [R, N] sampled ids (<tts_end> included)
    num_out: jax.Array  # [R] tokens written
    done: jax.Array  # [R]


def _sample(row_keys, step, logits, sampling: Sampling):
    """Tokens [R] from constrained logits [R, V]: greedy at temperature 0, else a draw with key
    fold_in(row key, step) (chorus.decoding.generate's randomness)."""
    if sampling.temperature == 0:
        return jnp.argmax(logits, -1).astype(jnp.int32)
    processed = sampling_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p)
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
    return jax.vmap(jax.random.categorical)(keys, processed).astype(jnp.int32)


def _emit(s: DecodeState, row_keys, limits, constraints: Constraints, end_id, stops,
          sampling: Sampling) -> DecodeState:
    live = ~s.done
    logits = constraints(s.logits[:, None], s.tokens, s.num_out[:, None])[:, 0]
    # No <tts_end> before the first code: an utterance has at least one code.
    first = (s.num_out == 0)[:, None] & (jnp.arange(logits.shape[-1]) == end_id)[None]
    token = _sample(row_keys, s.step, jnp.where(first, -jnp.inf, logits), sampling)
    tokens = write_rows(s.tokens, s.num_out, token[:, None], live)
    num_out = jnp.where(live, s.num_out + 1, s.num_out)
    stop = (token[:, None] == stops[None]).any(-1)
    return s.replace(step=s.step + 1, tokens=tokens, num_out=num_out,
                     done=s.done | (live & (stop | (num_out >= limits))))


def _start(model, params, prompts, lengths, audio_features, audio_mask, row_keys, limits,
           constraints, end_id, stops, *, sampling: Sampling, capacity: int,
           width: int) -> DecodeState:
    """Prefill (with the speaker clips, if any) + the first code of every row."""
    logits, _, cache = prompt_forward(model, params, prompts, lengths, None, audio_features,
                                      audio_mask, capacity)
    rows = prompts.shape[0]
    state = DecodeState(step=jnp.zeros((), jnp.int32), cache=cache,
                        logits=at_last(logits, lengths),
                        tokens=jnp.zeros((rows, width), jnp.int32),
                        num_out=jnp.zeros((rows,), jnp.int32), done=jnp.zeros((rows,), bool))
    return _emit(state, row_keys, limits, constraints, end_id, stops, sampling)


def _advance(model, params, state: DecodeState, until, row_keys, limits, constraints, end_id,
             stops, *, sampling: Sampling) -> DecodeState:
    """Decode steps until every row is done or `until` (a traced step count) is reached."""

    def body(s: DecodeState) -> DecodeState:
        last = jnp.take_along_axis(s.tokens, jnp.maximum(s.num_out - 1, 0)[:, None], axis=1)
        logits, _, cache = model.apply({"params": params}, last, s.cache,
                                       method=UnifiedAudioLM.decode)
        # Finished rows stay put, so their ignored writes stay inside the capacity.
        cache = cache.replace(lengths=jnp.where(s.done, s.cache.lengths, cache.lengths))
        return _emit(s.replace(cache=cache, logits=logits[:, 0]), row_keys, limits, constraints,
                     end_id, stops, sampling)

    return jax.lax.while_loop(lambda s: jnp.any(~s.done) & (s.step < until), body, state)


_start_jit = jax.jit(_start, static_argnames=("model", "sampling", "capacity", "width"))
_advance_jit = jax.jit(_advance, static_argnames=("model", "sampling"), donate_argnums=(2,))


class CodeSampler:
    """The batch's decode loop on the device: `start()` (prefill + first code), then
    `advance(until)` runs decode steps until output position `until` (or all rows end)."""

    def __init__(self, model: UnifiedAudioLM, params, prompts: Sequence[np.ndarray],
                 max_codes: Sequence[int], row_keys, decoding: SpeechDecoding,
                 clips: Sequence[np.ndarray | None] | None = None):
        layout = VocabLayout.from_model_config(model.config.model)
        self.model, self.params, self.layout = model, params, layout
        rows = len(prompts)
        width = round_up(max(len(p) for p in prompts), PROMPT_BUCKET)
        # The output buffer; the rows' limits (<= the context left) end them before its end.
        self.width = round_up(max(max_codes), CODES_BUCKET)
        self.prompts = np.full((rows, width), layout.pad_id, np.int32)
        for i, p in enumerate(prompts):
            self.prompts[i, :len(p)] = p
        self.lengths = np.asarray([len(p) for p in prompts], np.int32)
        self.audio_features, self.audio_mask = _clip_batch(clips, rows)
        self.limits = jnp.asarray(max_codes, jnp.int32)
        self.end_id = layout.special("<tts_end>")
        allowed = np.zeros((layout.size,), bool)
        allowed[layout.audio_code_ids(np.arange(layout.num_audio_codes))] = True
        allowed[self.end_id] = True
        self.constraints = Constraints(
            check_allowed(jnp.asarray(allowed), rows, layout.size), decoding.repetition_penalty,
            decoding.repetition_window if decoding.repetition_penalty != 1.0 else 0)
        self.stops = stop_array((self.end_id,))
        self.sampling = Sampling(decoding.temperature, decoding.top_k, decoding.top_p)
        self.row_keys = row_keys
        self.capacity = width + self.width - 1
        self.state: DecodeState | None = None

    def start(self) -> None:
        self.state = _start_jit(self.model, self.params, jnp.asarray(self.prompts),
                                jnp.asarray(self.lengths), self.audio_features,
                                self.audio_mask, self.row_keys, self.limits,
                                self.constraints, self.end_id, self.stops,
                                sampling=self.sampling, capacity=self.capacity,
                                width=self.width)

    def advance(self, until: int) -> None:
        self.state = _advance_jit(self.model, self.params, self.state,
                                  jnp.asarray(until, jnp.int32), self.row_keys, self.limits,
                                  self.constraints, self.end_id, self.stops,
                                  sampling=self.sampling)

    def fetch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens [R, N], num_out [R], done [R]) on the host."""
        return jax.device_get((self.state.tokens, self.state.num_out, self.state.done))

    def rows(self) -> list[tuple[np.ndarray, bool]]:
        """Per row: (codes, truncated)."""
        tokens, num_out, _ = self.fetch()
        out = []
        for row, n in zip(tokens, num_out, strict=True):
            ids = row[:n]
            ended = n > 0 and ids[-1] == self.end_id
            out.append((self.layout.ids_to_audio_codes(ids[:-1] if ended else ids)
                        .astype(np.int32), not ended))
        return out


def _clip_batch(clips: Sequence[np.ndarray | None] | None, rows: int):
    """(audio_features [R, 1, T, mels], audio_mask [R, 1, T]) of the rows' speaker clips, T
    padded to CLIP_BUCKET frames; (None, None) when no row has one."""
    if not clips or all(c is None for c in clips):
        return None, None
    mels = next(c for c in clips if c is not None).shape[-1]
    frames = round_up(max(len(c) for c in clips if c is not None), CLIP_BUCKET)
    features = np.zeros((rows, 1, frames, mels), np.float32)
    mask = np.zeros((rows, 1, frames), bool)
    for i, clip in enumerate(clips):
        if clip is not None:
            features[i, 0, :len(clip)], mask[i, 0, :len(clip)] = clip, True
    return jnp.asarray(features), jnp.asarray(mask)


# ----------------------------------------------------------------------------- requests


@dataclasses.dataclass(frozen=True)
class Checked:
    words: str  # the spoken text (inline directions removed)
    voice: Any = None  # data_pipelines.voices.Voice of a catalog voice
    wave: np.ndarray | None = None  # a reference clip (16 kHz)


def check_request(request: SpeechRequest, min_samples: int = 640) -> Checked:
    """What a request can be checked for without a model (RequestError naming the field):
    text (words, known inline directions), instruction, speaker (a catalog voice, or a
    readable, long enough and not silent audio file), seed."""
    from chorus.audio.io import AudioError, load_wave
    from data_pipelines.voices import get_voice

    if not isinstance(request.text, str):
        raise RequestError("text", f"expected a string, got {type(request.text).__name__}")
    try:
        words = plain_text(request.text)
    except TagError as e:
        raise RequestError("text", str(e)) from None
    if not words:
        raise RequestError("text", f"expected words to speak, got {request.text!r}")
    instruction = "" if request.instruction is None else request.instruction
    if not isinstance(instruction, str):
        raise RequestError("instruction", f"expected a string, got "
                                          f"{type(instruction).__name__}")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise RequestError("instruction", f"expected at most {MAX_INSTRUCTION_CHARS} "
                                          f"characters, got {len(instruction)}")
    seed = request.seed
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise RequestError("seed", f"expected an int >= 0, got {seed!r}")
    speaker = request.speaker
    if speaker is None or speaker == "":
        return Checked(words)
    if not isinstance(speaker, str):
        raise RequestError("speaker", f"expected a voice name or an audio file path, got "
                                      f"{type(speaker).__name__}")
    if os.path.exists(speaker) or speaker.lower().endswith(AUDIO_SUFFIXES) or os.sep in speaker:
        try:
            wave = load_wave(speaker, min_samples=min_samples)
        except AudioError as e:
            raise RequestError("speaker", str(e)) from None
        peak = float(np.abs(wave).max())
        if peak < SILENCE_PEAK:
            raise RequestError("speaker", f"{speaker}: expected speech to take the voice from, "
                                          f"got silence (peak {peak:.2g})")
        return Checked(words, wave=wave)
    try:
        return Checked(words, voice=get_voice(speaker))
    except ValueError as e:
        raise RequestError("speaker", f"expected an audio file or a catalog voice; {e}") from None


# ----------------------------------------------------------------------------- synthesizer


class Synthesizer:
    """A TTS run's backbone + its tokenizer + the codec whose codes it speaks."""

    def __init__(self, config: Config, model: UnifiedAudioLM, params, tokenizer, codec: Codec,
                 decoding: SpeechDecoding, clip_seconds: float = 0.0):
        """clip_seconds: the speaker clips the model was trained with
        (experiment.speaker_clip_seconds; 0 = none, the reference WAV then only conditions
        the detokenizer)."""
        self.config, self.model, self.params = config, model, params
        self.tokenizer, self.codec, self.decoding = tokenizer, codec, decoding
        self.clip_seconds = clip_seconds
        self.layout = VocabLayout.from_model_config(config.model)
        self.context = config.model.max_seq_len
        if codec.cfg.fsq.num_codes != self.layout.num_audio_codes:
            raise ValueError(f"codec: num_codes={codec.cfg.fsq.num_codes} != the TTS model's "
                             f"model.num_audio_codes={self.layout.num_audio_codes}; use the codec "
                             f"whose codes the model was trained on")

    @classmethod
    def load(cls, workdir: str, codec_run: str | None = None, overrides: Sequence[str] = (),
             step: int | None = None) -> Synthesizer:
        """A TTS run directory (params only, chorus.training.restore.load_run; the tokenizer
        from its assets) and the codec run `codec_run`, else its experiment.codec_run. The
        codec's producer key must be the run's experiment.cache_key (the codes it learned)."""
        from chorus.training.restore import asset_path, load_run
        from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer
        from experiments.codec.corpus_codes import producer_key
        from experiments.tts.settings import tts_settings

        run = load_run(workdir, overrides, step=step, devices=jax.local_devices()[:1])
        settings = tts_settings(run.config)
        codec_dir = codec_run or settings.codec_run
        if not codec_dir:
            raise ValueError(f"codec_run: {run.workdir}/config.json names no codec run "
                             f"(experiment.codec_run is empty); pass the codec run directory "
                             f"(--codec RUN)")
        codec = Codec.load(os.path.expanduser(codec_dir))
        key = producer_key(codec)
        if key != settings.cache_key:
            raise ValueError(f"codec_run: {codec_dir} has producer key {key}, but the TTS run "
                             f"learned the codes of experiment.cache_key={settings.cache_key}; "
                             f"pass the codec run that encoded its corpus")
        tokenizer = TextTokenizer.from_file(asset_path(run.workdir, TOKENIZER_FILENAME))
        model = UnifiedAudioLM(run.config)
        return cls(run.config, model, run.params["backbone"], tokenizer, codec,
                   settings.decoding, settings.speaker_clip_seconds)

    # ------------------------------------------------------------------ requests

    def prepare(self, request: SpeechRequest) -> Prepared:
        """Checks a request (RequestError naming the field) and builds its prompt."""
        checked = check_request(request, self.codec.min_samples)
        if checked.voice is not None:
            if checked.voice.name not in self.codec.voices:
                raise RequestError("speaker", f"voice {checked.voice.name!r} is not among the "
                                              f"codec's {len(self.codec.voices)} training "
                                              f"voices; give a reference clip of it instead")
            speaker_text = speaker_prompt(str(checked.voice.speaker_id))
            flow_speaker = self.codec.voices[checked.voice.name]
        elif checked.wave is not None:
            speaker_text, flow_speaker = "", self.codec.speaker_embedding(checked.wave)
        else:
            speaker_text, flow_speaker = "", self.codec.resolve_speaker(None)
        clip = self.speaker_clip(checked.wave)
        prompt = prompt_ids(self.layout, self.tokenizer.encode, request.instruction or "",
                            speaker_text, request.text, 0 if clip is None else len(clip))
        room = self.context - len(prompt) + 1  # codes the context holds after the prompt
        d = self.decoding
        if room < d.min_codes:
            raise RequestError("text", f"the prompt is {len(prompt)} tokens; with at least "
                                       f"{d.min_codes} codes (experiment.decoding.min_codes) it "
                                       f"exceeds the model's context model.max_seq_len="
                                       f"{self.context}")
        wanted = math.ceil(len(checked.words) * d.max_codes_per_char) + d.min_codes
        seed = d.seed if request.seed is None else request.seed
        return Prepared(request, prompt, min(wanted, room), flow_speaker, seed, clip)

    def speaker_clip(self, wave: np.ndarray | None) -> np.ndarray | None:
        """The log-mel of a reference clip's first clip_seconds, as training heard its
        speaker prompts (None without a clip, or for a model trained without them)."""
        if wave is None or not self.clip_seconds:
            return None
        return mel.log_mel(wave[: int(self.clip_seconds * SAMPLE_RATE)])

    # ------------------------------------------------------------------ synthesis

    def sampler(self, prepared: Sequence[Prepared]) -> CodeSampler:
        keys = jnp.stack([jax.random.PRNGKey(p.seed) for p in prepared])
        return CodeSampler(self.model, self.params, [p.prompt for p in prepared],
                           [p.max_codes for p in prepared], keys, self.decoding,
                           [p.clip for p in prepared])

    def _flow(self) -> dict[str, Any]:
        return {"steps": self.decoding.flow_steps, "guidance": self.decoding.guidance}

    def synthesize(self, requests: Sequence[SpeechRequest | Prepared]) -> list[Synthesis]:
        """Offline: all codes (batched), then each row through codec.decode."""
        t0 = time.perf_counter()
        prepared = [r if isinstance(r, Prepared) else self.prepare(r) for r in requests]
        if not prepared:
            return []
        sampler = self.sampler(prepared)
        sampler.start()
        jax.block_until_ready(sampler.state.tokens)
        t1 = time.perf_counter()
        sampler.advance(sampler.width)
        rows = sampler.rows()
        t2 = time.perf_counter()
        longest = max(c.size + (not t) for c, t in rows)
        out = []
        for p, (codes, truncated) in zip(prepared, rows, strict=True):
            start = time.perf_counter()
            wave = self.codec.decode(codes, speaker=p.flow_speaker, seed=p.seed, **self._flow())
            done = time.perf_counter()
            total = done - t0
            out.append(Synthesis(wave, codes, truncated, Timings(
                prefill_s=t1 - t0, decode_s=t2 - t1, per_code_ms=1e3 * (t2 - t1) / max(
                    longest - 1, 1), detokenize_s=done - start, total_s=total,
                first_packet_ms=None, rtf=total / (wave.size / SAMPLE_RATE))))
        return out

    def stream(self, requests: Sequence[SpeechRequest | Prepared]) -> SpeechStream:
        """Streaming: codes chunk by chunk into each row's StreamingDetokenizer; iterate the
        result for the audio Packets as they become final."""
        start = time.perf_counter()
        prepared = [r if isinstance(r, Prepared) else self.prepare(r) for r in requests]
        if not prepared:
            raise ValueError("stream: expected at least one request, got none")
        return SpeechStream(self, prepared, time.perf_counter() - start)


class SpeechStream:
    """Iterate for Packets; afterwards `results` holds one Synthesis per request (the codes
    are those synthesize() samples; the wave is the detokenizer's streamed wave)."""

    def __init__(self, synth: Synthesizer, prepared: list[Prepared], prepare_s: float = 0.0):
        self.synth, self.prepared, self.prepare_s = synth, prepared, prepare_s
        self.results: list[Synthesis] | None = None

    def __iter__(self) -> Iterator[Packet]:
        synth, prepared = self.synth, self.prepared
        t0 = time.perf_counter() - self.prepare_s  # the request's checks count
        sampler = synth.sampler(prepared)
        detoks = [synth.codec.stream(speaker=p.flow_speaker, seed=p.seed, **synth._flow())
                  for p in prepared]
        chunk = detoks[0].cfg.chunk_codes
        first_chunk = detoks[0].algorithmic_latency_codes
        n = len(prepared)
        pushed = [0] * n
        waves: list[list[np.ndarray]] = [[] for _ in range(n)]
        detok_s = [0.0] * n
        first: list[float | None] = [None] * n
        flushed = [False] * n
        sampler.start()
        jax.block_until_ready(sampler.state.tokens)
        t1 = time.perf_counter()
        decode_s, until = 0.0, first_chunk
        while not all(flushed):
            start = time.perf_counter()
            sampler.advance(until)
            tokens, num_out, done = sampler.fetch()
            decode_s += time.perf_counter() - start
            for i in range(n):
                if flushed[i]:
                    continue
                ids = tokens[i, :num_out[i]]
                ended = done[i] and num_out[i] > 0 and ids[-1] == sampler.end_id
                upto = num_out[i] - 1 if ended else num_out[i]
                start = time.perf_counter()
                parts = [detoks[i].push(synth.layout.ids_to_audio_codes(ids[pushed[i]:upto])
                                        .astype(np.int32))]
                pushed[i] = upto
                if done[i]:
                    parts.append(detoks[i].flush())
                    flushed[i] = True
                detok_s[i] += time.perf_counter() - start
                for part in parts:
                    if part.size:
                        if first[i] is None:
                            first[i] = time.perf_counter() - t0
                        waves[i].append(part)
                        yield Packet(i, part, int(num_out[i]))
            until += chunk
        end = time.perf_counter()
        rows = sampler.rows()
        longest = max(c.size + (not t) for c, t in rows)
        self.results = []
        for i, (codes, truncated) in enumerate(rows):
            wave = np.concatenate(waves[i]).astype(np.float32)
            total = end - t0
            self.results.append(Synthesis(wave, codes, truncated, Timings(
                prefill_s=t1 - t0, decode_s=decode_s, per_code_ms=1e3 * decode_s / max(
                    longest - 1, 1), detokenize_s=detok_s[i], total_s=total,
                first_packet_ms=1e3 * first[i], rtf=total / (wave.size / SAMPLE_RATE))))
