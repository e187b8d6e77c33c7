"""Beam search (chorus.decoding.beam) on random-initialized backbones: width 1 is greedy
decoding, a full-width beam finds the brute-force best (and n-best) sequences, the reported
scores are the uncached forward's sequence log-probs, stop tokens end hypotheses."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone
from decoding_reference import np_constrain

from chorus.config import ConfigError, DecodeConfig, load_config
from chorus.decoding.beam import beam_search
from chorus.decoding.verified import greedy_decode
from chorus.rl.logprobs import sequence_logprobs
from chorus.vocab import VocabLayout

# Untied embeddings: a random tied model just repeats its last token (as in the greedy tests).
CFG = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=1",
                               "model.tie_embeddings=false"])
LAYOUT = VocabLayout.from_model_config(CFG.model)
B, P, MEL = 6, 9, 40
LENGTHS = np.array([9, 1, 4, 6, 3, 8], np.int32)


@pytest.fixture(scope="module")
def backbone():
    return random_backbone(CFG, 0)


def _prompts(seed, lengths=LENGTHS):
    """Ragged ASR-like prompts <asr> <audio>x(up to 5) text..., and each row's audio."""
    rng = np.random.default_rng(seed)
    b = len(lengths)
    prompts = rng.integers(0, LAYOUT.text_size, size=(b, P)).astype(np.int32)
    prompts[:, 0] = LAYOUT.special("<asr>")
    num_ph = np.clip(lengths - 2, 0, 5)
    for r in range(b):
        prompts[r, 1:1 + num_ph[r]] = LAYOUT.audio_placeholder_id
    prompts[np.arange(P)[None, :] >= lengths[:, None]] = LAYOUT.pad_id
    features = rng.normal(size=(b, 1, MEL, CFG.audio.n_mels)).astype(np.float32)
    mask = np.arange(MEL)[None, None, :] < 8 * num_ph[:, None, None]
    return prompts, np.asarray(lengths, np.int32), features, mask


def _audio(features, mask):
    return {"audio_features": jnp.asarray(features), "audio_mask": jnp.asarray(mask)}


@functools.partial(jax.jit, static_argnums=0)
def _full_logits(model, params, tokens, features, mask):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return model.apply({"params": params}, tokens, positions, jnp.ones_like(tokens), features,
                       mask)["logits"]


def _uncached(model, params, request, rows, seqs, pad_to=None):
    """Full-forward logits [N, P + L, V] of prompt rows[i] followed by seqs[i] (right-padded),
    with each row's audio: (logits, tokens, completion start per row). pad_to: run that many
    rows (one compile for any N <= pad_to)."""
    prompts, lengths, features, mask = request
    n = len(seqs)
    if pad_to is not None:
        rows, seqs = list(rows) + [0] * (pad_to - n), list(seqs) + [()] * (pad_to - n)
    width = P + MAX_NEW  # one shape (one compile) per row count
    tokens = np.full((len(seqs), width), LAYOUT.pad_id, np.int32)
    for i, (r, s) in enumerate(zip(rows, seqs, strict=True)):
        m = lengths[r]
        tokens[i, :m] = prompts[r, :m]
        tokens[i, m:m + len(s)] = s
    logits = _full_logits(model, params, jnp.asarray(tokens), jnp.asarray(features[rows]),
                          jnp.asarray(mask[rows]))
    return np.asarray(logits, np.float64)[:n], tokens[:n], lengths[rows][:n]


def _reference_beam(model, params, request, width, max_new, stops, alpha, nbest):
    """Beam search as a plain loop over uncached forwards (the rules of chorus.decoding.beam,
    one prompt at a time): per prompt, the finished pool [(ranking, logp, tokens)], best
    first."""
    b = len(request[1])
    live = [[((), 0.0)] for _ in range(b)]
    pools, done = [[] for _ in range(b)], [False] * b
    for t in range(max_new):
        rows = [r for r in range(b) for _ in live[r]]
        seqs = [h for r in range(b) for h, _ in live[r]]
        logits, _, starts = _uncached(model, params, request, rows, seqs, pad_to=b * width)
        i = 0
        for r in range(b):
            cands = []
            for h, score in live[r]:
                logp = _log_softmax(logits[i, starts[i] - 1 + t])
                cands += [(score + logp[v], h + (v,)) for v in range(len(logp))]
                i += 1
            if done[r]:
                continue
            cands.sort(key=lambda c: -c[0])
            kth = cands[width - 1][0] if len(cands) >= width else -np.inf
            last = t == max_new - 1
            ending = [c for c in cands if last or c[1][-1] in stops]
            pools[r] = sorted(pools[r] + [(c[0] / (t + 1) ** alpha, c[0], c[1]) for c in ending
                                          if c[0] >= kth], key=lambda x: -x[0])[:width]
            live[r] = [(h, c) for c, h in cands if not (last or h[-1] in stops)][:width]
            bound = live[r][0][1] / max_new ** alpha if live[r] else -np.inf
            final = pools[r][-1 if nbest else 0][0] if len(pools[r]) == width or (
                pools[r] and not nbest) else -np.inf
            done[r] = final >= bound
        if all(done):
            break
    return pools


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    top = x.max()
    return x - top - np.log(np.exp(x - top).sum())


MAX_NEW = 10  # one greedy compile for the module: stop sets are data


def _greedy(model, params, request, stops, **constraints):
    prompts, lengths, features, mask = request
    return greedy_decode(model, params, jnp.asarray(prompts), jnp.asarray(lengths),
                         max_new_tokens=MAX_NEW, stop_tokens=stops, **_audio(features, mask),
                         **constraints)


def _greedy_stops(model, params, request, columns, **constraints):
    """Stop ids greedy decoding emits at the given (row, column)s: rows then stop mid-way."""
    tokens = np.asarray(_greedy(model, params, request, (), **constraints).tokens)
    return tuple(sorted({int(tokens[r, c]) for r, c in columns}))


@pytest.mark.parametrize("constrained", [False, True])
def test_width_one_is_greedy_decoding(backbone, constrained):
    model, params = backbone
    request = _prompts(0)
    prompts, lengths, features, mask = request
    extra = {}
    if constrained:  # per-row allowed ids and a windowed repetition penalty
        allowed = np.random.default_rng(5).random((B, LAYOUT.size)) < 0.3
        extra = dict(allowed_ids=jnp.asarray(allowed), repetition_penalty=1.7,
                     repetition_window=3)
    stops = _greedy_stops(model, params, request, [(0, 3), (2, 6)], **extra)
    greedy = _greedy(model, params, request, stops, **extra)
    settings = DecodeConfig(max_new_tokens=MAX_NEW, beam_width=1,
                            repetition_penalty=extra.get("repetition_penalty", 1.0),
                            repetition_window=extra.get("repetition_window", 0))
    beam = beam_search(model, params, jnp.asarray(prompts), jnp.asarray(lengths), settings,
                       stop_tokens=stops, allowed_ids=extra.get("allowed_ids"),
                       **_audio(features, mask))
    np.testing.assert_array_equal(np.asarray(beam.tokens), np.asarray(greedy.tokens))
    np.testing.assert_array_equal(np.asarray(beam.lengths), np.asarray(greedy.lengths))
    # some rows stop at a stop token, some run to max_new_tokens
    assert 0 < int(np.sum(np.asarray(greedy.lengths) < MAX_NEW)) < B


ALLOWED = (7, 11, LAYOUT.eos_id)  # two text ids and the stop token
L = 3  # max_new_tokens
# Every candidate of every step ranks among the top W (2^(L-1) live prefixes x 3 extensions),
# so the beam is an exhaustive search; 15 sequences exist, the n-best holds 12 of them.
FULL_WIDTH = 2 ** (L - 1) * len(ALLOWED)


def _all_sequences():
    text = [t for t in ALLOWED if t != LAYOUT.eos_id]
    seqs = [(*p, LAYOUT.eos_id) for n in range(L) for p in itertools.product(text, repeat=n)]
    return seqs + list(itertools.product(text, repeat=L))  # the ones max_new_tokens ends


def _brute_force(model, params, request, alpha, penalty, window):
    """Per prompt: every sequence as (ranking score, constrained log-prob, tokens), best
    first (uncached forward, loop reference of the constraints), and the greedy sequence."""
    seqs = _all_sequences()
    b = len(request[1])
    rows = [r for r in range(b) for _ in seqs]
    logits, _, starts = _uncached(model, params, request, rows, seqs * b)
    allowed = np.isin(np.arange(LAYOUT.size), ALLOWED)
    ranked, greedy = [], []
    for r in range(b):
        scored, step_logp = [], {}  # prefix -> next-token log-probs
        for i, s in enumerate(seqs):
            n = r * len(seqs) + i
            for j in range(len(s)):
                step_logp[s[:j]] = _log_softmax(np_constrain(
                    logits[n, starts[n] - 1 + j], s[:j], allowed, penalty, window))
            logp = sum(step_logp[s[:j]][s[j]] for j in range(len(s)))
            scored.append((logp / len(s) ** alpha, logp, s))
        ranked.append(sorted(scored, key=lambda x: -x[0]))
        path = ()
        while len(path) < L and (not path or path[-1] != LAYOUT.eos_id):
            path += (max(ALLOWED, key=lambda t, p=path: step_logp[p][t]),)
        greedy.append(path)
    return ranked, greedy


@pytest.mark.parametrize("alpha,penalty,window", [(0.0, 1.0, 0), (0.8, 1.6, 2)])
def test_a_full_width_beam_finds_the_brute_force_best_and_n_best(backbone, alpha, penalty,
                                                                    window):
    model, params = backbone
    request = _prompts(3, np.array([9, 3, 6, 1, 5, 7], np.int32))
    prompts, lengths, features, mask = request
    settings = DecodeConfig(max_new_tokens=L, beam_width=FULL_WIDTH, length_penalty=alpha,
                            repetition_penalty=penalty, repetition_window=window)
    allowed = jnp.asarray(np.isin(np.arange(LAYOUT.size), ALLOWED))
    beam = beam_search(model, params, jnp.asarray(prompts), jnp.asarray(lengths), settings,
                       allowed_ids=allowed, nbest=True, **_audio(features, mask))
    ranked, greedy = _brute_force(model, params, request, alpha, penalty, window)
    for r, ref in enumerate(ranked):
        assert ref[0][0] - ref[1][0] > 1e-3  # no near-tie decides the best
        n = int(beam.lengths[r])
        assert tuple(np.asarray(beam.tokens[r, :n]).tolist()) == ref[0][2]
        np.testing.assert_allclose(float(beam.scores[r]), ref[0][1], atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.asarray(beam.nbest_ranking[r]),
                                   [x[0] for x in ref[:FULL_WIDTH]], atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.asarray(beam.nbest_scores[r]),
                                   [x[1] for x in ref[:FULL_WIDTH]], atol=1e-4, rtol=0)
        score_of = {x[2]: x[0] for x in ref}
        assert float(beam.nbest_ranking[r, 0]) >= score_of[greedy[r]] - 1e-5
    # the search matters: greedy misses the best sequence of some prompt
    assert any(g != ref[0][2] for g, ref in zip(greedy, ranked, strict=True))


# alpha 1.5: an early stop on the usual bound logp / length**alpha would miss the best.
@pytest.mark.parametrize("alpha,nbest", [(0.0, False), (0.6, True), (1.5, False)])
def test_a_narrow_beam_matches_the_loop_reference_and_stops_end_hypotheses(backbone, alpha,
                                                                           nbest):
    from chorus.decoding import beam as beam_module

    model, params = backbone
    request = _prompts(2)
    prompts, lengths, features, mask = request
    width = 4
    stops = _greedy_stops(model, params, request, [(r, 3) for r in range(B)])
    settings = DecodeConfig(max_new_tokens=MAX_NEW, beam_width=width, length_penalty=alpha)
    beam = beam_search(model, params, jnp.asarray(prompts), jnp.asarray(lengths), settings,
                       stop_tokens=stops, nbest=nbest, **_audio(features, mask))
    compiled = beam_module._beam_jit._cache_size()
    other = _prompts(3)  # other prompts, audio and stop ids (as many): no new compile
    beam_search(model, params, jnp.asarray(other[0]), jnp.asarray(other[1]), settings,
                stop_tokens=tuple(t + 1 for t in stops), nbest=nbest, **_audio(*other[2:]))
    assert beam_module._beam_jit._cache_size() == compiled
    tokens, lens = np.asarray(beam.nbest_tokens), np.asarray(beam.nbest_lengths)
    scores, ranking = np.asarray(beam.nbest_scores), np.asarray(beam.nbest_ranking)
    found = np.isfinite(scores)
    # the n-best: W finished hypotheses per prompt; else at least the best (at alpha 0 the
    # search stops before some prompt's pool fills)
    assert found.all() if nbest else found[:, 0].all() and (alpha > 0 or not found.all())
    np.testing.assert_allclose(ranking[found], (scores / lens ** alpha)[found], rtol=1e-6)
    stop_set = np.asarray(stops)
    for r in range(B):
        for j in np.flatnonzero(found[r]):
            n = lens[r, j]
            body = tokens[r, j, :n]
            # a stop token ends a hypothesis: it is never extended, pads follow
            assert not np.isin(body[:-1], stop_set).any()
            assert n == MAX_NEW or body[-1] in stop_set
            assert (tokens[r, j, n:] == LAYOUT.pad_id).all()
    if alpha < 1:  # both endings occur (alpha 1.5 favours running to max_new_tokens)
        assert (lens < MAX_NEW).any() and (lens == MAX_NEW).any()
    np.testing.assert_array_equal(np.asarray(beam.tokens), tokens[:, 0])
    # the n-best of the loop reference (pruning, the rank rule, the pool, the stop bound)
    pools = _reference_beam(model, params, request, width, MAX_NEW, set(stops), alpha, nbest)
    for r, pool in enumerate(pools):
        assert [tuple(tokens[r, j, :lens[r, j]].tolist()) for j in np.flatnonzero(found[r])
                ] == [x[2] for x in pool]
        np.testing.assert_allclose(scores[r, found[r]], [x[1] for x in pool], atol=1e-4, rtol=0)
    # the reported scores: the uncached forward's sequence log-probs (chorus.rl.logprobs)
    rows = [r for r in range(B) for j in range(width) if found[r, j]]
    seqs = [tokens[r, j, :lens[r, j]] for r in range(B) for j in range(width) if found[r, j]]
    logits, padded, starts = _uncached(model, params, request, rows, seqs, pad_to=B * width)
    completion = np.zeros(padded.shape, bool)
    for i, s in enumerate(seqs):
        completion[i, starts[i]: starts[i] + len(s)] = True
    logps = np.asarray(sequence_logprobs(jnp.asarray(logits[:, :-1]), jnp.asarray(padded[:, 1:]),
                                         jnp.asarray(completion[:, 1:])))
    np.testing.assert_allclose(scores[found], logps.sum(axis=1), atol=1e-4, rtol=0)
    # Not asserted: best >= greedy's score. A beam narrower than the search space can prune
    # the greedy prefix (here, alpha 0, row 5: -44.6 vs greedy's -18.6, which stops after 4
    # tokens), as in every beam search; the full-width test checks it where it holds.


def test_settings_and_requests_are_checked(backbone):
    model, params = backbone
    assert DecodeConfig().beam_width == 1 and DecodeConfig().length_penalty == 0.0
    assert load_config("cpu-tiny", ["decode.beam_width=4", "decode.length_penalty=0.6"]
                       ).decode == DecodeConfig(beam_width=4, length_penalty=0.6)
    with pytest.raises(ConfigError, match=r"decode.beam_width: expected an int >= 1, got 0"):
        DecodeConfig(beam_width=0)
    with pytest.raises(ConfigError, match=r"decode.length_penalty: expected a number >= 0"):
        DecodeConfig(length_penalty=-0.5)
    prompts, lengths, features, mask = _prompts(0)
    with pytest.raises(ValueError, match=r"decode.temperature: expected 0 for beam search"):
        beam_search(model, params, jnp.asarray(prompts), jnp.asarray(lengths),
                    DecodeConfig(temperature=0.7, beam_width=2))
    with pytest.raises(ValueError, match=r"prompt_lengths: expected values in \[1, 9\]"):
        beam_search(model, params, jnp.asarray(prompts), jnp.asarray(lengths * 0),
                    DecodeConfig(beam_width=2))


@pytest.fixture(scope="module")
def tiny_asr():
    """(config, AsrModel, params) of a random-initialized tiny ASR model without heads."""
    import flax.linen as nn
    from asr_runs import ASR

    from experiments.asr.model import AsrModel
    from experiments.asr.settings import asr_settings

    config = load_config("cpu-tiny", [*ASR, "model.tie_embeddings=false", "experiment.mtp=null",
                                      "experiment.ctc_weight=0", "decode.max_new_tokens=6"])
    asr = AsrModel.build(config, asr_settings(config))
    return config, asr, nn.meta.unbox(jax.jit(asr.init_fn(config))(jax.random.key(0)))


def _frames(config, seed=0):
    return np.random.default_rng(seed).normal(size=(37, config.audio.n_mels)).astype(np.float32)


@pytest.mark.slow  # three compiles of a fresh ASR model (~25-70 s on a loaded 2-core CPU)
def test_the_transcriber_beam_mode_takes_its_width_from_the_config(tiny_asr):
    import dataclasses

    from experiments.asr.transcriber import Transcriber

    config, asr, params = tiny_asr
    one = Transcriber(config, asr, params, tokenizer=None)
    request = one.request(_frames(config))
    greedy, beam = one.decode(request, "greedy"), one.decode(request, "beam")
    np.testing.assert_array_equal(np.asarray(beam.tokens), np.asarray(greedy.tokens))
    wide = dataclasses.replace(config, decode=dataclasses.replace(config.decode, beam_width=3))
    three = Transcriber(wide, asr, params, tokenizer=None).decode(request, "beam")
    assert three.nbest_tokens.shape == (1, 3, 6)
    np.testing.assert_array_equal(np.asarray(three.tokens), np.asarray(three.nbest_tokens[:, 0]))
    with pytest.raises(ValueError, match=r"mode: expected one of .*'beam'.*, got 'bean'"):
        one.decode(request, "bean")


@pytest.mark.parametrize("argv,mode", [(["--set", "decode.beam_width=3"], "beam"),
                                       ([], "verified"),  # no CTC head: no joint default
                                       (["--set", "decode.beam_width=3", "--greedy"], "greedy")])
def test_transcribe_decodes_with_beam_search_when_the_width_is_set(tiny_asr, tmp_path,
                                                                     monkeypatch, capsys, argv,
                                                                     mode):
    import json
    import types

    import soundfile

    from chorus.config import apply_overrides
    from chorus.training.run_config import write_run_config
    from experiments.asr import cli, transcriber

    config, asr, params = tiny_asr
    write_run_config(str(tmp_path), config)
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, np.random.default_rng(0).normal(0, 0.1, 4000), 16_000)
    modes = []

    class Recording(transcriber.Transcriber):
        def decode(self, request, mode="verified"):
            modes.append(mode)
            return super().decode(request, "greedy" if mode == "verified" else mode)

    tokenizer = types.SimpleNamespace(decode=lambda ids: " ".join(map(str, ids)))
    monkeypatch.setattr(transcriber, "load_transcriber", lambda workdir, overrides, step: (
        Recording(apply_overrides(config, overrides), asr, params, tokenizer),
        types.SimpleNamespace(step=0)))
    # the clip is noise: the speech gate would (rightly) skip decoding it
    assert cli.main(["--workdir", str(tmp_path), "--set", "experiment.speech_gate=null", *argv,
                     str(wav)]) == 0
    assert modes == [mode]
    assert json.loads(capsys.readouterr().out)["file"] == str(wav)
