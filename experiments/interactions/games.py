"""The games of chorus' models: players of an input, f(S) = a log-probability with only S kept.

    game, info = audio_game(transcriber, frames, transcript_ids, players, baseline="mean")
        f(S) = log p(transcript <eos> | the clip with the spans of S kept, the rest baseline)
    game, info = text_game(synth, SpeechRequest("turn on the light"), mask="pad")
        f(S) = log p(the codes the model spoke for the whole text | the prompt with the
               words of S kept, the others' tokens replaced by the mask token)

Both value functions run one jitted forward per batch of coalitions (a fixed batch shape:
the last chunk is padded, so a game compiles once). The transcript of an audio game is the
reference when there is one, else the model's own greedy transcript of the clean clip (the
output being explained); the codes of a text game are the model's own sample for the whole
prompt, so f(N) is the log-probability of what it said.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from chorus.analysis.game import Game
from chorus.analysis.players import (
    Players,
    audio_baseline,
    mask_by_owner,
    mask_tokens,
    token_spans,
)
from chorus.rl.logprobs import sequence_logprobs
from data_pipelines.tokenizer import UNK_ID
from experiments.asr.scoring import transcript_scorer
from experiments.asr.transcriber import text_ids_of
from experiments.tts.prompt import prompt_ids, speaker_prompt

TEXT_MASKS = ("pad", "unk")
BATCH = 128  # coalitions per forward


def _fixed_batch(fn, batch: int):
    """keep [B, n] -> values [B] through `fn` at a fixed batch size (pads the last chunk)."""

    def value(keep: np.ndarray) -> np.ndarray:
        keep = np.asarray(keep, bool)
        out = []
        for start in range(0, len(keep), batch):
            chunk = keep[start:start + batch]
            padded = np.concatenate([chunk, np.ones((batch - len(chunk), chunk.shape[1]),
                                                    bool)])
            out.append(np.asarray(fn(jnp.asarray(padded)), np.float64)[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0,), np.float64)

    return value


@functools.partial(jax.jit, static_argnames=("axis",))
def _masked_scores(scorer, params, frames, baseline, owner, keep, axis):
    return scorer(params, mask_by_owner(frames, keep, owner, baseline, axis))


def audio_game(transcriber, frames: np.ndarray, transcript_ids, players: Players,
               baseline: str = "mean", params=None, batch: int = BATCH) -> Game:
    """The ASR game of one clip: log-mel `frames` [T, n_mels], players along its time or
    mel axis, the baseline "mean" (the encoder's normalization mean) or "silence". `params`:
    another backbone of the same architecture (default: the transcriber's). Clips are padded
    to the scorer's bucket (the padding is outside every player and masked from the model),
    so one program serves every clip of a bucket."""
    if players.axis not in ("time", "frequency"):
        raise ValueError(f"audio_game players: expected time or frequency players, got "
                         f"{players.axis!r}")
    frames = np.asarray(frames, np.float32)
    scorer = transcript_scorer(transcriber.asr.backbone, transcriber.layout, len(frames),
                               transcript_ids)
    base = audio_baseline(baseline, frames.shape, transcriber.config.audio.mel_mean)
    axis = 0 if players.axis == "time" else 1
    owner = players.index_of(frames.shape[axis])
    pad = scorer.width - len(frames)
    if axis == 0:
        owner = np.pad(owner, (0, pad), constant_values=-1)
    frames, base = (np.pad(x, ((0, pad), (0, 0))) for x in (frames, base))
    backbone = transcriber.params["backbone"] if params is None else params
    args = (jnp.asarray(frames), jnp.asarray(base), jnp.asarray(owner))

    def forward(keep):
        return _masked_scores(scorer, backbone, *args, keep, axis=axis)

    return Game(players.count, _fixed_batch(forward, batch), players.names, batch_size=batch)


def greedy_transcript(transcriber, frames: np.ndarray) -> np.ndarray:
    """The model's greedy transcript ids of a clip (text ids before <eos>)."""
    result = transcriber.decode(transcriber.request(frames), "greedy")
    tokens, n = np.asarray(result.tokens)[0], int(np.asarray(result.lengths)[0])
    return text_ids_of(tokens[:n], transcriber.layout)


def _masked_logits(model, params, tokens: np.ndarray, keep, players: Players, mask_id: int):
    """Logits [B, L, V] of the token stream with the absent players' tokens masked (one
    packed segment, positions 0..L-1)."""
    b, length = keep.shape[0], len(tokens)
    tile = lambda x: jnp.broadcast_to(jnp.asarray(x), (b, length))  # noqa: E731
    masked = mask_tokens(tokens, keep, players, mask_id)
    return model.apply({"params": params}, masked, tile(np.arange(length)),
                       tile(np.ones(length, np.int32)))["logits"]


@dataclasses.dataclass(frozen=True)
class TextGame:
    game: Game
    players: Players
    words: tuple[str, ...]
    prompt: np.ndarray  # int32: the prompt of the whole text (every player kept)
    output: np.ndarray  # int32: what the model produced for it, which f scores (TTS: the
    # codes it spoke; judge: its rationale, ending with <verdict>)


def text_game(synth, request, mask: str = "pad", batch: int = BATCH) -> TextGame:
    """The TTS game of one request: its text's words (inline directions included) are the
    players. Each word is tokenized alone so that it owns whole tokens; the prompt is
    otherwise the one of experiments.tts.prompt (instruction, speaker text, no speaker clip)."""
    if mask not in TEXT_MASKS:
        raise ValueError(f"mask: expected one of {list(TEXT_MASKS)}, got {mask!r}")
    words = tuple(request.text.split())
    if len(words) < 2:
        raise ValueError(f"text: expected at least 2 words to be players, got {request.text!r}")
    if request.speaker is not None and request.speaker.lower().endswith(".wav"):
        raise ValueError("speaker: a text game takes a catalog voice (or none), not a clip")
    layout, encode = synth.layout, synth.tokenizer.encode
    prepared = synth.prepare(request)  # checks the request (RequestError naming the field)
    head = prompt_ids(layout, encode, request.instruction or "",
                      _speaker_text(synth, request), "")[:-1]  # drops <tts_start>
    pieces = [np.asarray(encode(w), np.int32) for w in words]
    players = token_spans(pieces, list(words), offset=len(head))
    prompt = np.concatenate([head, *pieces, [layout.special("<tts_start>")]]).astype(np.int32)
    prepared = dataclasses.replace(prepared, prompt=prompt, clip=None)
    sampler = synth.sampler([prepared])
    sampler.start()
    sampler.advance(sampler.width)
    codes, _ = sampler.rows()[0]
    end = layout.special("<tts_end>")
    continuation = np.concatenate([layout.audio_code_ids(codes), [end]]).astype(np.int32)
    tokens = np.concatenate([prompt, continuation])
    targets = np.append(tokens[1:], layout.pad_id).astype(np.int32)
    loss_mask = np.zeros(len(tokens), np.float32)
    loss_mask[len(prompt) - 1:len(tokens) - 1] = 1.0  # predicts every code and <tts_end>
    mask_id = layout.pad_id if mask == "pad" else UNK_ID
    model, params = synth.model, synth.params

    def forward(keep):
        logits = _masked_logits(model, params, tokens, keep, players, mask_id)
        b = keep.shape[0]
        tile = lambda x: jnp.broadcast_to(jnp.asarray(x), (b, len(tokens)))  # noqa: E731
        return sequence_logprobs(logits, tile(targets), tile(loss_mask)).sum(-1)

    game = Game(players.count, _fixed_batch(jax.jit(forward), batch), players.names,
                batch_size=batch)
    return TextGame(game, players, words, prompt, codes)


def judge_game(scorer, card: str, question: str, answer: str, mask: str = "pad",
               batch: int = BATCH) -> TextGame:
    """The judge's game of one exchange: the answer's words are the players; f(S) = log
    p(<yes>) - log p(<no>) at the verdict (the log-odds whose sigmoid is the judge's reward),
    after the rationale the judge wrote for the whole answer (teacher-forced, so f(N) is the
    log-odds behind its own judgement). `scorer`: an experiments.judge.scoring.JudgeScorer."""
    from experiments.judge.prompt import judge_prompt

    if mask not in TEXT_MASKS:
        raise ValueError(f"mask: expected one of {list(TEXT_MASKS)}, got {mask!r}")
    words = tuple(answer.split())
    if len(words) < 2:
        raise ValueError(f"text: expected an answer of at least 2 words, got {answer!r}")
    layout, encode = scorer.layout, scorer.encode
    rationale = scorer.pointwise([card], [question], [answer], samples=0).rationale_ids[0][0]
    head = judge_prompt(layout, encode, card, question, "")[:-1]  # drops <rationale>
    pieces = [np.asarray(encode(w), np.int32) for w in words]
    players = token_spans(pieces, list(words), offset=len(head))
    prompt = np.concatenate([head, *pieces, [layout.special("<rationale>")]]).astype(np.int32)
    tokens = np.concatenate([prompt, rationale]).astype(np.int32)  # ends with <verdict>
    yes, no = layout.special("<yes>"), layout.special("<no>")
    mask_id = layout.pad_id if mask == "pad" else UNK_ID
    model, params = scorer.model, scorer.params

    def forward(keep):
        logits = _masked_logits(model, params, tokens, keep, players, mask_id)
        logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32), axis=-1)
        return logp[:, yes] - logp[:, no]

    game = Game(players.count, _fixed_batch(jax.jit(forward), batch), players.names,
                batch_size=batch)
    return TextGame(game, players, words, prompt, rationale)


def _speaker_text(synth, request) -> str:
    """The LM's speaker text of a request (a catalog voice's "speaker <id>", else empty),
    as Synthesizer.prepare builds it."""
    if request.speaker is None:
        return ""
    from experiments.tts.synthesizer import check_request

    checked = check_request(request, synth.codec.min_samples)
    return "" if checked.voice is None else speaker_prompt(str(checked.voice.speaker_id))
