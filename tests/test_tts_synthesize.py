"""experiments/tts/synthesizer.py + cli.py: sampling restricted to the audio codes (against a
cache-free reference loop and chorus.decoding.generate), the length guard, streaming =
offline, the bad-input errors, and `chorus synthesize` end to end on the tiny trained stack."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone
from codec_fixtures import random_params, tiny_config
from decoding_reference import np_constrain
from tts_runs import TTS_SETS

from chorus.audio.io import load_wave, write_wav
from chorus.codec.compile import fast_compile
from chorus.codec.pipeline import Codec
from chorus.config import DecodeConfig, load_config
from chorus.decoding.generate import generate
from experiments.tts.settings import SpeechDecoding
from experiments.tts.synthesizer import (
    MAX_INSTRUCTION_CHARS,
    CodeSampler,
    RequestError,
    SpeechRequest,
    Synthesizer,
)

# An untied output head, so tests can set the logits of chosen ids through its columns.
CFG = load_config("cpu-tiny", [*TTS_SETS, "model.tie_embeddings=false"])
VOICES = ("en-us", "en-gb+f3")


class CharTokenizer:  # a stand-in tokenizer: one id per character
    def encode(self, text: str) -> np.ndarray:
        return np.array([ord(c) % 128 for c in text], np.int32)


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    with fast_compile():  # the codec's jits are compile-bound
        yield


@pytest.fixture(scope="module")
def codec():
    cfg = tiny_config()
    rng = np.random.default_rng(0)
    voices = {v: rng.standard_normal(cfg.speaker.embed_dim).astype(np.float32) for v in VOICES}
    return Codec(cfg, random_params(cfg), voices)


@pytest.fixture(scope="module")
def backbone():
    return random_backbone(CFG)


def _synth(backbone, codec, params=None, config=CFG, **decoding):
    model, random_params_ = backbone
    return Synthesizer(config, model, random_params_ if params is None else params,
                       CharTokenizer(), codec, SpeechDecoding(**decoding))


def _with_head(params, fn):
    """params with lm_head.kernel [d, V] replaced by fn(kernel copy)."""
    kernel = np.array(params["lm_head"]["kernel"])
    return {**params, "lm_head": {"kernel": jnp.asarray(fn(kernel))}}


def _text_heavy(params, layout):
    # Text columns 50x: the unconstrained argmax is a text id at every step.
    def fn(k):
        k[:, :layout.text_size] *= 50.0
        return k
    return _with_head(params, fn)


def _allowed(layout):
    mask = np.zeros(layout.size, bool)
    mask[layout.audio_offset:layout.used_size] = True
    mask[layout.special("<tts_end>")] = True
    return mask


def _reference_greedy(model, params, prompt, allowed, penalty, window, limit, end_id):
    """Greedy over full forwards (no KV cache), constrained by the numpy reference, <tts_end>
    refused as the first token."""
    width = len(prompt) + limit
    forward = jax.jit(lambda t: model.apply({"params": params}, t,
                                            jnp.arange(width)[None])["logits"])
    seq, out = list(prompt), []
    for t in range(limit):
        tokens = np.zeros((1, width), np.int32)
        tokens[0, :len(seq)] = seq
        logits = np.asarray(forward(jnp.asarray(tokens))[0, len(seq) - 1])
        constrained = np_constrain(logits, out, allowed, penalty, window)
        if t == 0:
            constrained[end_id] = -np.inf
        out.append(int(np.argmax(constrained)))
        seq.append(out[-1])
        if out[-1] == end_id:
            break
    return out, logits


def test_greedy_codes_are_the_constrained_argmax_even_when_text_wins(backbone, codec):
    model, params = backbone
    layout = _synth(backbone, codec).layout
    end = layout.special("<tts_end>")
    prompt = _synth(backbone, codec).prepare(SpeechRequest("hello there", speaker="en-us")).prompt

    def repetitive(k):
        # Text columns 50x (the unconstrained argmax is text at every step), and the first
        # greedy code's column 3x: unpenalized greedy falls into a loop (1014 669 764 ...).
        k[:, :layout.text_size] *= 50.0
        k[:, 1014] *= 3.0
        return k

    params = _with_head(params, repetitive)
    synth = _synth(backbone, codec, params, temperature=0.0, repetition_penalty=1.5,
                   repetition_window=4, max_codes_per_char=1.0, min_codes=4)
    prepared = synth.prepare(SpeechRequest("hello there", speaker="en-us"))
    assert prepared.max_codes == 11 + 4  # ceil(11 chars * 1.0) + min_codes
    sampler = synth.sampler([prepared])
    sampler.start()
    sampler.advance(sampler.width)
    tokens, num_out, _ = sampler.fetch()
    got = tokens[0, :num_out[0]].tolist()
    want, _ = _reference_greedy(model, params, prepared.prompt, _allowed(layout), 1.5, 4,
                                prepared.max_codes, end)
    assert got == want
    assert all(layout.is_audio_code(t) or t == end for t in got)
    # The construction holds: unconstrained greedy decoding speaks text only ...
    free = synth_greedy_unconstrained(model, params, prompt, len(got))
    assert all(t < layout.text_size for t in free)
    # ... and without the penalty greedy repeats a code inside the window.
    plain = _reference_greedy(model, params, prompt, _allowed(layout), 1.0, 0,
                              prepared.max_codes, end)[0]
    assert plain != want and any(plain[i] in plain[max(0, i - 4):i] for i in range(len(plain)))
    assert not any(want[i] in want[max(0, i - 4):i] for i in range(len(want)))


def synth_greedy_unconstrained(model, params, prompt, n):
    from chorus.decoding.verified import greedy_decode

    r = greedy_decode(model, params, jnp.asarray(prompt[None]), jnp.asarray([len(prompt)]),
                      max_new_tokens=n)
    return np.asarray(r.tokens[0, :n]).tolist()


def test_sampling_matches_chorus_generate(backbone, codec):
    """Same per-row keys, constraints, temperature / top-k / top-p: the same tokens as
    chorus.decoding.generate (the chunked loop changes nothing)."""
    model, params = backbone
    layout = _synth(backbone, codec).layout
    params = _text_heavy(params, layout)
    decoding = dict(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.3,
                    repetition_window=5)
    synth = _synth(backbone, codec, params, **decoding)
    prompts = [synth.prepare(SpeechRequest(t)).prompt for t in ("good night", "(softly) hi")]
    rng, limit = jax.random.PRNGKey(7), 20
    sampler = CodeSampler(model, params, prompts, [limit, limit], jax.random.split(rng, 2),
                          synth.decoding)
    sampler.start()
    for until in (3, 4, 11, 64):  # uneven chunks
        sampler.advance(until)
    tokens, num_out, _ = sampler.fetch()
    width = max(map(len, prompts))
    padded = np.zeros((2, width), np.int32)
    for i, p in enumerate(prompts):
        padded[i, :len(p)] = p
    ref = generate(model, params, jnp.asarray(padded), jnp.asarray([len(p) for p in prompts]),
                   rng, DecodeConfig(max_new_tokens=limit, **decoding),
                   stop_tokens=(layout.special("<tts_end>"),),
                   allowed_ids=jnp.asarray(_allowed(layout)))
    for i in range(2):
        assert tokens[i, :num_out[i]].tolist() == np.asarray(
            ref.tokens[i, :int(ref.lengths[i])]).tolist()
    assert num_out.tolist() == [limit, limit]  # 1001 allowed ids: no early <tts_end> here


def test_length_guard_truncates_and_tts_end_stops(backbone, codec):
    _, params = backbone
    layout = _synth(backbone, codec).layout
    end = layout.special("<tts_end>")

    def never_end(k):
        k[:, end] = 0.0  # logit 0 < the max of 1000 random code logits
        return k

    def always_end(k):
        # Every code logit and <tts_end>'s are 0: greedy takes the lowest tied id,
        # <tts_end> (the specials precede the codes), once it is allowed (after one code).
        k[:, layout.audio_offset:layout.used_size] = 0.0
        k[:, end] = 0.0
        return k

    kw = dict(temperature=0.0, max_codes_per_char=0.5, min_codes=3)
    synth = _synth(backbone, codec, _with_head(params, never_end), **kw)
    texts = ("hi", "a longer text")
    out = synth.synthesize([SpeechRequest(t) for t in texts])
    for text, r in zip(texts, out, strict=True):
        assert r.truncated and r.codes.size == -(-len(text) // 2) + 3
        assert r.wave.size == r.codes.size * 640
    ended = _synth(backbone, codec, _with_head(params, always_end), **kw).synthesize(
        [SpeechRequest(t) for t in texts])  # the same shapes: no new compile
    assert [(r.truncated, r.codes.tolist()) for r in ended] == [(False, [0])] * 2
    # The context bounds the guard: a 64-token context leaves 64 - prompt + 1 codes.
    small = dataclasses.replace(CFG, model=dataclasses.replace(CFG.model, max_seq_len=64))
    synth = _synth(backbone, codec, config=small, max_codes_per_char=4.0, min_codes=3)
    prepared = synth.prepare(SpeechRequest("x" * 40))
    assert prepared.max_codes == 64 - len(prepared.prompt) + 1 == 20 < 40 * 4 + 3
    synth.prepare(SpeechRequest("x" * 57))  # prompt 62: room for min_codes=3 codes
    with pytest.raises(RequestError, match=r"^text: the prompt is 63 tokens.*max_seq_len=64"):
        synth.prepare(SpeechRequest("x" * 58))


def test_streaming_equals_offline(backbone, codec, tmp_path):
    _, params = backbone
    layout = _synth(backbone, codec).layout

    def never_end(k):
        k[:, layout.special("<tts_end>")] = 0.0
        return k

    ref = str(tmp_path / "ref.wav")
    write_wav(ref, 0.3 * np.sin(np.arange(16000) * 0.05).astype(np.float32))
    synth = _synth(backbone, codec, _with_head(params, never_end), max_codes_per_char=2.0,
                   min_codes=5)
    requests = [SpeechRequest("turn it on", speaker="en-gb+f3", seed=1),
                SpeechRequest("a slightly longer one", speaker=ref, seed=2),
                SpeechRequest("(loudly) go", seed=3)]
    offline = synth.synthesize(requests)
    stream = synth.stream(requests)
    packets = list(stream)
    for i, (a, b) in enumerate(zip(offline, stream.results, strict=True)):
        np.testing.assert_array_equal(a.codes, b.codes)
        assert a.truncated == b.truncated
        assert b.wave.shape == a.wave.shape == (a.codes.size * 640,)
        # The codec's own streaming bound (tests/test_codec_streaming.py): with the tiny
        # config's context and lookahead covering every receptive field, streamed = offline
        # to fp32 rounding of chunked vs whole convolutions (measured there <= 6.6e-7 of the
        # peak; 2e-6 of the peak is its tolerance).
        np.testing.assert_allclose(b.wave, a.wave, rtol=0, atol=2e-6 * np.abs(a.wave).max())
        mine = [p for p in packets if p.index == i]
        assert np.array_equal(np.concatenate([p.samples for p in mine]), b.wave)
        if i < 2:  # rows long enough for several chunks: audio left before the last code
            assert len(mine) >= 3 and mine[0].codes_sampled < a.codes.size
        assert b.timings.first_packet_ms < 1e3 * b.timings.total_s
    # Different speakers really reach the detokenizer.
    assert not np.allclose(offline[0].wave[:3200], offline[2].wave[:3200])


def test_bad_requests_fail_with_one_line_naming_the_field(backbone, codec, tmp_path):
    synth = _synth(backbone, codec)
    silent, short, junk = (str(tmp_path / n) for n in ("silent.wav", "short.wav", "junk.wav"))
    write_wav(silent, np.zeros(16000, np.float32))
    write_wav(short, 0.3 * np.ones(100, np.float32))
    with open(junk, "wb") as f:
        f.write(b"not audio at all")
    cases = [
        (SpeechRequest(""), "text", "expected words to speak"),
        (SpeechRequest("(softly)"), "text", "expected words to speak"),
        (SpeechRequest("say (angrily) no"), "text", "'(angrily)': not one the model was trained"),
        (SpeechRequest("hi", instruction="x" * (MAX_INSTRUCTION_CHARS + 1)), "instruction",
         f"at most {MAX_INSTRUCTION_CHARS} characters, got {MAX_INSTRUCTION_CHARS + 1}"),
        (SpeechRequest("hi", speaker=str(tmp_path / "missing.wav")), "speaker",
         "expected an existing audio file"),
        (SpeechRequest("hi", speaker=junk), "speaker", "junk.wav"),
        (SpeechRequest("hi", speaker=silent), "speaker", "got silence"),
        (SpeechRequest("hi", speaker=short), "speaker", "expected at least 640 samples"),
        (SpeechRequest("hi", speaker="en-martian"), "speaker", "catalog voice"),
        (SpeechRequest("hi", speaker="en-us+f1"), "speaker", "not among the codec's 2"),
        (SpeechRequest("hi", seed=-1), "seed", "expected an int >= 0"),
        (SpeechRequest("word " * 300), "text", "exceeds the model's context"),
    ]
    for request, field, message in cases:
        with pytest.raises(RequestError) as info:
            synth.prepare(request)
        text = str(info.value)
        assert info.value.field == field and text.startswith(f"{field}: "), text
        assert message in text and "\n" not in text, text


def _cli(argv, capsys):
    from experiments.tts.cli import main

    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines()], err


@pytest.mark.slow
def test_cli_end_to_end(tiny_tts_stack, tmp_path, capsys, monkeypatch):
    # Each command loads the codec afresh, and its jits are compile-bound: XLA level 0.
    monkeypatch.setenv("CHORUS_CODEC_FAST_COMPILE", "1")
    stack = tiny_tts_stack
    with open(os.path.join(stack["codec"], "voices.json")) as f:
        voice = sorted(json.load(f))[0]
    base = ["--workdir", stack["tts"], "--set", "experiment.decoding.max_codes_per_char=0.5",
            "--set", "experiment.decoding.min_codes=4"]
    outs = {}
    for mode in ([], ["--stream"]):
        out = str(tmp_path / f"one{len(mode)}.wav")
        rc, lines, err = _cli([*base, *mode, "--text", "(softly) good night", "--speaker", voice,
                               "--seed", "5", out], capsys)
        assert rc == 0, err
        (line,) = lines
        wave = load_wave(out)
        assert line["path"] == out and wave.size == line["codes"] * 640
        assert line["codes"] <= -(-len("good night") // 2) + 4
        assert (line["first_packet_ms"] is None) == (not mode) and line["rtf"] > 0
        outs[len(mode)] = wave
    # streamed == offline (16-bit WAVs: within a few LSB, the codec's streaming bound + rounding)
    assert outs[0].shape == outs[1].shape
    np.testing.assert_allclose(outs[0], outs[1], atol=3 / 32768)

    jsonl = tmp_path / "batch.jsonl"
    jsonl.write_text("\n".join([json.dumps({"text": "hello there", "id": "a"}),
                                json.dumps({"text": "say (angrily) no"}),
                                "", "{not json",
                                json.dumps({"text": "one more", "speaker": voice, "seed": 2})]))
    rc, lines, err = _cli([*base, "--jsonl", str(jsonl), "--out-dir", str(tmp_path / "d")],
                          capsys)
    assert rc == 1
    assert [os.path.basename(x["path"]) for x in lines] == ["a.wav", "0005.wav"]
    assert all(os.path.isfile(x["path"]) for x in lines)
    errors = err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"chorus synthesize: {jsonl}:2: text: inline direction "
                                f"'(angrily)'")
    assert errors[1].startswith(f"chorus synthesize: {jsonl}:4: json: expected a JSON object")

    # Bad arguments: exit 2 with one line, before any checkpoint is read.
    for argv, message in [
        ([*base, str(tmp_path / "x.wav")], "expected exactly one of --text"),
        ([*base, "--text", "", str(tmp_path / "x.wav")], "text: expected words to speak"),
        ([*base, "--text", "hi", "--speaker", str(tmp_path / "nope.wav"),
          str(tmp_path / "x.wav")], "speaker: "),
        ([*base, "--jsonl", str(jsonl)], "--jsonl: expected --out-dir"),
        ([*base, "--codec", str(tmp_path), "--text", "hi", str(tmp_path / "x.wav")],
         "expected a trained codec"),
        ([*base, "--set", "experiment.codec_run=''", "--text", "hi", str(tmp_path / "x.wav")],
         "codec_run: " + stack["tts"]),
    ]:
        rc, lines, err = _cli(argv, capsys)
        assert rc == 2 and not lines and len(err.strip().splitlines()) == 1, (argv, err)
        assert err.startswith("chorus synthesize: ") and message in err, err


def test_a_reference_clip_enters_the_prompt_through_the_audio_encoder(backbone, codec,
                                                                      tmp_path):
    from chorus.vocab import num_audio_placeholders

    model, params = backbone
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    paths = []
    for i, f0 in enumerate((140.0, 260.0)):
        wave = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(t.size)
        paths.append(str(tmp_path / f"ref{i}.wav"))
        write_wav(paths[-1], wave.astype(np.float32))
    synth = Synthesizer(CFG, model, params, CharTokenizer(), codec,
                        SpeechDecoding(temperature=0.0, max_codes_per_char=1.0, min_codes=4),
                        clip_seconds=0.5)
    prepared = [synth.prepare(SpeechRequest("hello there", speaker=p)) for p in paths]
    clip = prepared[0].clip
    assert clip.shape[0] in (50, 51)  # 0.5 s of 10 ms frames
    placeholders = (prepared[0].prompt == synth.layout.audio_placeholder_id).sum()
    assert placeholders == num_audio_placeholders(clip.shape[0])
    voice = synth.prepare(SpeechRequest("hello there", speaker="en-us"))
    assert voice.clip is None and not (voice.prompt == synth.layout.audio_placeholder_id).any()

    def codes(batch):
        sampler = synth.sampler(batch)
        sampler.start()
        sampler.advance(sampler.width)
        return [c.tolist() for c, _ in sampler.rows()]

    alone = [codes([p])[0] for p in (*prepared, voice)]
    # a batch mixing clips and no clip decodes each row as alone (clip padding is masked)
    assert codes([prepared[0], voice, prepared[1]]) == [alone[0], alone[2], alone[1]]
    # the clip's audio reaches the prefill: the two clips' prompts (same text, same length)
    # give different next-code logits. (Their greedy codes may still agree on a random
    # backbone, so codes are not the check.)
    from chorus.model import UnifiedAudioLM, init_cache

    batch = synth.sampler(prepared[:2])
    logits, _, _ = jax.jit(lambda p, *a: model.apply({"params": p}, *a,
                                                     method=UnifiedAudioLM.prefill))(
        params, jnp.asarray(batch.prompts), jnp.asarray(batch.lengths),
        init_cache(CFG, 2, batch.capacity), batch.audio_features, batch.audio_mask)
    last = int(batch.lengths[0]) - 1
    assert batch.lengths[0] == batch.lengths[1]
    assert float(jnp.abs(logits[0, last] - logits[1, last]).max()) > 1e-3
    no_clips = Synthesizer(CFG, model, params, CharTokenizer(), codec, SpeechDecoding())
    assert no_clips.prepare(SpeechRequest("hello there", speaker=paths[0])).clip is None
