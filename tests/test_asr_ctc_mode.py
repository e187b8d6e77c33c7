"""The transcriber's CTC mode on the tiny ASR run: best path from the training forward's
adaptor frames (a per-frame loop as reference), word timestamps from a hand-built alignment,
and the error of a run without a CTC head."""

import copy
import dataclasses

import jax
import numpy as np
import pytest

from chorus.config import ConfigError
from chorus.decoding.ctc import ctc_prefix_beam_search
from experiments.asr.ctc_eval import ctc_beam_texts, ctc_eval
from experiments.asr.ctc_timestamps import FRAME_SECONDS, word_timestamps
from experiments.asr.regime import eval_examples
from experiments.asr.settings import asr_settings
from experiments.asr.transcriber import load_transcriber, pad_requests


@pytest.fixture(scope="module")
def loaded(tiny_asr_run):
    return load_transcriber(str(tiny_asr_run))


@pytest.fixture(scope="module")
def examples(loaded):
    transcriber, run = loaded
    return eval_examples(run.config, asr_settings(run.config), "test", 2)


def _reference_best_path(transcriber, example):
    """The training forward (tokens with <audio> placeholders, as AsrModel.loss_fn runs it),
    the CTC head over the adaptor frames it spliced, then argmax / collapse frame by frame."""
    import jax.numpy as jnp

    one = pad_requests([example], transcriber.layout, transcriber.max_frames)
    tokens = jnp.asarray(one["prompts"][:, :one["lengths"][0]])
    positions = jnp.arange(tokens.shape[1])[None]
    out = transcriber.asr.backbone.apply({"params": transcriber.params["backbone"]},
                                         tokens, positions, jnp.ones_like(tokens),
                                         jnp.asarray(one["audio_features"]),
                                         jnp.asarray(one["audio_mask"]))
    logits = transcriber.asr.ctc_head.apply({"params": transcriber.params["ctc"]},
                                            out["audio_frames"])[0, 0]
    frames = np.asarray(out["audio_frame_mask"])[0, 0]
    ids, starts, ends, prev = [], [], [], 0
    for t in np.flatnonzero(frames):
        c = int(np.argmax(logits[t]))
        if c != 0 and c != prev:
            ids.append(c - 1)
            starts.append(int(t))
            ends.append(int(t))
        elif c != 0:
            ends[-1] = int(t)
        prev = c
    return ids, starts, ends, np.asarray(logits, np.float64)[frames]


def test_ctc_mode_is_the_best_path_of_the_training_forwards_frames(loaded, examples):
    transcriber, _ = loaded
    request = pad_requests(examples, transcriber.layout, transcriber.max_frames)
    result = transcriber.decode(request, mode="ctc")
    texts = transcriber.texts(result)
    beam_texts = ctc_beam_texts(transcriber, request, 4)
    for i, example in enumerate(examples):
        ids, starts, ends, logits = _reference_best_path(transcriber, example)
        n = int(result.lengths[i])
        assert np.asarray(result.ids[i, :n]).tolist() == ids
        assert np.asarray(result.starts[i, :n]).tolist() == starts
        assert np.asarray(result.ends[i, :n]).tolist() == ends
        assert texts[i] == transcriber.tokenizer.decode(ids)
        # the beam texts are the search over this row's valid frames only
        lp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        (best, score), *_ = ctc_prefix_beam_search(lp, beam=4)
        assert beam_texts[i] == transcriber.tokenizer.decode(best) and np.isfinite(score)


def test_word_timestamps_of_a_hand_built_alignment(loaded):
    tokenizer = loaded[0].tokenizer
    text = "turn off the lights, please"
    ids = tokenizer.encode(text)
    pieces = tokenizer.pieces(ids)
    assert "".join(pieces).replace("\u2581", " ").strip() == text
    starts = 3 * np.arange(len(ids)) + 1  # token k on frames 3k+1 ..= 3k+2
    ends = starts + 1
    words = word_timestamps(ids, starts, ends, tokenizer)
    assert [w["word"] for w in words] == text.split()
    # by hand: a word runs from its first piece's first frame to its last piece's last frame,
    # a lone "▁" piece (this tokenizer writes "turn" as "▁" "t" "u" "r" "n") not timing it
    first = [k for k, p in enumerate(pieces) if p.startswith("\u2581") or k == 0]
    last = [k - 1 for k in first[1:]] + [len(ids) - 1]
    assert "\u2581" in pieces  # the case is exercised
    for w, a, b in zip(words, first, last, strict=True):
        a += pieces[a] == "\u2581"
        assert w["start"] == pytest.approx(starts[a] * 0.08, abs=1e-12)
        assert w["end"] == pytest.approx((ends[b] + 1) * 0.08, abs=1e-12)
    # and on "lights," the comma stays with its word
    assert words[3] == {"word": "lights,", "start": pytest.approx(starts[pieces.index("l")] * 0.08),
                        "end": pytest.approx((ends[pieces.index(",")] + 1) * 0.08)}
    assert FRAME_SECONDS == pytest.approx(0.08)
    with pytest.raises(ValueError, match="of one length, got 5, 5 and 4"):
        word_timestamps(ids[:5], starts[:5], ends[:4], tokenizer)
    with pytest.raises(ValueError, match="0 <= starts <= ends"):
        word_timestamps(ids[:2], [3, 1], [4, 2], tokenizer)


def test_transcriber_word_timestamps_cover_the_ctc_text(loaded, examples):
    transcriber, _ = loaded
    request = pad_requests(examples, transcriber.layout, transcriber.max_frames)
    result = transcriber.ctc_decode(request)
    rows = transcriber.word_timestamps(request, result)
    seconds = request["audio_mask"].reshape(len(examples), -1).sum(-1) / 100
    for words, text, limit in zip(rows, transcriber.texts(result), seconds, strict=True):
        assert " ".join(w["word"] for w in words) == " ".join(text.split())
        for w in words:
            assert 0 <= w["start"] <= w["end"] <= limit
        assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:], strict=False))
    assert rows == transcriber.word_timestamps(request)  # decodes itself when not given


def test_ctc_eval_reports_each_decoder(loaded, examples):
    transcriber, _ = loaded
    report = ctc_eval(transcriber, examples, batch_size=2, beam=2)
    assert set(report) == {"greedy", "ctc_greedy", "ctc_beam"}
    ctc_texts = transcriber.texts(transcriber.decode(
        pad_requests(examples, transcriber.layout, transcriber.max_frames), mode="ctc"))
    assert [e["hypothesis"] for e in report["ctc_greedy"]["examples"]] == ctc_texts
    for row in report.values():
        assert 0 <= row["wer"] and row["seconds"] > 0 and row["utterances"] == 2


def test_a_run_without_a_ctc_head_says_so(loaded, examples):
    transcriber, _ = loaded
    no_head = type(transcriber)(transcriber.config,
                                dataclasses.replace(transcriber.asr, ctc_head=None,
                                                    ctc_weight=0.0),
                                transcriber.params, transcriber.tokenizer)
    request = pad_requests(examples[:1], transcriber.layout, transcriber.max_frames)
    with pytest.raises(ConfigError, match=r"experiment\.ctc_weight.*mode 'ctc'.*got 0\.0"):
        no_head.decode(request, mode="ctc")
    with pytest.raises(ConfigError, match=r"experiment\.ctc_weight"):
        no_head.word_timestamps(request)


@pytest.mark.slow  # ~20 s on 2 shared cores: two decoder paths compiled
def test_joint_rescoring_scores_candidates_like_the_kv_cache_decoder(loaded, examples):
    import jax
    import jax.numpy as jnp

    from chorus.decoding.inputs import prompt_forward
    from chorus.model.unified import UnifiedAudioLM
    from experiments.asr.ctc_eval import joint_rescore

    transcriber, _ = loaded
    request = pad_requests(examples[:1], transcriber.layout, transcriber.max_frames)
    ids = tuple(transcriber.tokenizer.encode("turn off the lights").tolist()[:5])
    got = transcriber.decoder_logprobs(request, np.array([0]), [ids])
    # padding slots (a fixed shape) change nothing
    assert transcriber.decoder_logprobs(request, np.array([0]), [ids], slots=5)[0] == \
        pytest.approx(got[0], abs=1e-5)
    # reference: prefill the prompt into a KV cache, then extend by the candidate + <eos>
    model, params = transcriber.asr.backbone, transcriber.params["backbone"]
    n = int(request["lengths"][0])
    prompt = jnp.asarray(request["prompts"][:, :n])
    logits, _, cache = prompt_forward(model, params, prompt, jnp.array([n]), None,
                                      jnp.asarray(request["audio_features"]),
                                      jnp.asarray(request["audio_mask"]), n + len(ids) + 1)
    window = jnp.asarray([list(ids)])
    more, _, _ = model.apply({"params": params}, window, jnp.array([len(ids)]), cache,
                             method=UnifiedAudioLM.extend)
    steps = jnp.concatenate([logits[:, n - 1: n], more], axis=1)[0]  # predicts ids + <eos>
    lp = np.asarray(jax.nn.log_softmax(steps, axis=-1))
    want = sum(lp[j, t] for j, t in enumerate([*ids, transcriber.layout.eos_id]))
    assert got[0] == pytest.approx(want, abs=1e-3)
    # weight 1 picks a CTC-only best: the beam's best transcript (or one scoring higher)
    picked = joint_rescore(transcriber, request, 4, (1.0,))[1.0]
    assert picked[0] in {ctc_beam_texts(transcriber, request, 4)[0],
                         transcriber.texts(transcriber.decode(request, "greedy"))[0]}


@pytest.mark.slow
def test_rescore_mode_picks_the_joint_best_of_greedy_and_the_ctc_beam(loaded, examples):
    """`decode(mode="rescore")`: each row's candidates are the greedy transcript and the CTC
    beam's best, each scored by the decoder (teacher-forced, one row alone = in the batch) and
    by CTC (optax), and the pick maximizes w * ctc + (1 - w) * dec; w = 0 / 1 pick the
    decoder's / CTC's favourite; the pick comes back as text ids."""
    from experiments.asr.transcriber import text_ids_of

    transcriber, _ = loaded
    request = pad_requests(examples[:2], transcriber.layout, transcriber.max_frames)
    scored = transcriber.decode(request, mode="rescore")
    assert set(scored.owners.tolist()) == {0, 1}
    for i in (0, 1):
        mine = np.flatnonzero(scored.owners == i)
        greedy = transcriber.decode(request, mode="greedy")
        want = tuple(text_ids_of(np.asarray(greedy.tokens[i, :int(greedy.lengths[i])]),
                                 transcriber.layout).tolist())
        cands = [scored.candidates[k] for k in mine]
        if len(want) < transcriber.settings.max_new_tokens:
            assert want in cands
        beam = {ids for ids, _ in ctc_prefix_beam_search(
            np.asarray(jax.nn.log_softmax(transcriber.ctc_logits(request)[0][i], -1),
                       np.float64)[np.asarray(transcriber.ctc_logits(request)[1][i])],
            transcriber.settings.rescore_beam)}
        assert {c for c in beam if len(c) < transcriber.settings.max_new_tokens} <= set(cands)
        # each candidate's decoder score alone equals its score in the padded batch
        alone = transcriber.decoder_logprobs(request, scored.owners[mine[:1]],
                                             [scored.candidates[mine[0]]])
        assert alone[0] == pytest.approx(scored.decoder_logprob[mine[0]], abs=1e-4)
        for w, scores in ((0.0, scored.decoder_logprob), (1.0, scored.ctc_logprob)):
            assert scores[scored.picks(w)[i]] == scores[mine].max()
        w = transcriber.settings.rescore_weight
        joint = w * scored.ctc_logprob[mine] + (1 - w) * scored.decoder_logprob[mine]
        pick = scored.candidates[mine[int(np.argmax(joint))]]
        assert tuple(scored.tokens[i, :scored.lengths[i]].tolist()) == pick
    rows = transcriber.decode_text_ids([np.asarray(ex["audio_features"]).reshape(-1, 128)[
        :int(np.sum(ex["audio_mask"]))] for ex in examples[:2]], "rescore", batch_size=2)
    assert [tuple(r.tolist()) for r in rows] == [
        tuple(scored.tokens[i, :scored.lengths[i]].tolist()) for i in (0, 1)]


def test_rescore_settings_are_checked():
    from chorus.config import DecodeConfig, load_config

    assert load_config("cpu-tiny", ["decode.rescore_weight=0.3", "decode.rescore_beam=4"]
                       ).decode == DecodeConfig(rescore_weight=0.3, rescore_beam=4)
    with pytest.raises(ConfigError, match=r"decode.rescore_weight: expected a value in \[0, 1\], "
                                          r"got 1.5"):
        DecodeConfig(rescore_weight=1.5)
    with pytest.raises(ConfigError, match=r"decode.rescore_beam: expected an int >= 1, got 0"):
        DecodeConfig(rescore_beam=0)


def test_joint_mode_fuses_the_requests_own_ctc_head(loaded, examples):
    """`decode(mode="joint")` is verified decoding under the CTC prefix scorer built from the
    request's CTC logits: it equals joint greedy, and greedy_decode with that scorer built by
    hand; with joint_weight 0 it is the plain greedy transcript."""
    import jax.numpy as jnp

    from chorus.decoding.joint import ctc_prefix_scorer
    from chorus.decoding.verified import greedy_decode

    transcriber, _ = loaded
    request = pad_requests(examples[:2], transcriber.layout, transcriber.max_frames)
    joint = transcriber.decode(request, mode="joint")
    np.testing.assert_array_equal(joint.tokens,
                                  transcriber.decode(request, mode="joint_greedy").tokens)
    logits, mask = transcriber.ctc_logits(request)
    s = transcriber.settings
    by_hand = greedy_decode(
        transcriber.asr.backbone, transcriber.params["backbone"], jnp.asarray(request["prompts"]),
        jnp.asarray(request["lengths"]), max_new_tokens=s.max_new_tokens,
        audio_features=jnp.asarray(request["audio_features"]),
        audio_mask=jnp.asarray(request["audio_mask"]),
        scorer=ctc_prefix_scorer(logits, mask, weight=s.joint_weight,
                                 candidates=s.joint_candidates, end_id=transcriber.layout.eos_id,
                                 ctc_candidates=s.joint_ctc_candidates))
    np.testing.assert_array_equal(joint.tokens, by_hand.tokens)
    # joint beam search of width 1 is joint greedy too
    np.testing.assert_array_equal(
        transcriber.with_decode(beam_width=1).decode(request, mode="joint_beam").tokens,
        joint.tokens)
    off = copy.copy(transcriber)
    off.settings = dataclasses.replace(s, joint_weight=0.0)
    np.testing.assert_array_equal(off.decode(request, mode="joint").tokens,
                                  transcriber.decode(request, mode="greedy").tokens)


def test_joint_settings_are_checked():
    from chorus.config import DecodeConfig

    with pytest.raises(ConfigError, match=r"decode.joint_weight: expected a value in \[0, 1\]"):
        DecodeConfig(joint_weight=-0.1)
    with pytest.raises(ConfigError, match=r"decode.joint_candidates: expected an int >= 1"):
        DecodeConfig(joint_candidates=0)


def test_forced_aligned_words_time_the_reference_text(loaded, examples):
    """Any transcript gets word times: the reference ids (not what the 3-step model says)
    force-aligned to each clip's CTC frames, the words in order, inside the clip; keep selects
    the words of a slice; ids the frames cannot hold give None."""
    transcriber, _ = loaded
    clips = [np.asarray(ex["audio_features"]).reshape(-1, 128)[:int(np.sum(ex["audio_mask"]))]
             for ex in examples]
    # the tiny tokenizer spells words nearly letter by letter: keep the ids half the frames
    # hold (a clip of T mel frames has ceil(T / 8) CTC frames)
    ids = [np.asarray(ex["reference_ids"])[:len(c) // 16] for ex, c in zip(examples, clips,
                                                                          strict=True)]
    rows = transcriber.aligned_words(clips, ids, batch_size=2)
    for words, clip, row in zip(rows, clips, ids, strict=True):
        text = transcriber.tokenizer.decode([int(t) for t in row])
        assert " ".join(w["word"] for w in words) == " ".join(text.split())
        assert all(0 <= w["start"] < w["end"] <= len(clip) / 100 + 1e-9 for w in words)
        assert all(a["end"] <= b["start"] + 1e-9 for a, b in zip(words, words[1:],
                                                                  strict=False))
    first = rows[0]
    n = len(ids[0])
    tail = transcriber.aligned_words(clips[:1], ids[:1], keep=[(n // 2, n)])[0]
    assert tail and tail[-1] == first[-1] and len(tail) < len(first)
    too_many = np.tile(ids[0], 40)  # far more tokens than the clip has 80 ms frames
    assert transcriber.aligned_words(clips[:1], [too_many]) == [None]


def test_transcript_words_shift_each_window_by_its_start():
    from experiments.asr.longform import Transcript, Window, transcript_words

    class Aligner:
        def aligned_words(self, clips, ids, keep, batch_size):
            assert [len(c) for c in clips] == [300, 200] and keep == [(0, 2), (1, 3)]
            return [[{"word": "a", "start": 0.5, "end": 0.9}],
                    [{"word": "b", "start": 0.25, "end": 0.5}], ][:len(clips)]

    t = Transcript("a b", np.zeros(3, np.int32), (), (Window(0, 300), Window(400, 600)), (),
                   0.0, (np.arange(2), np.arange(3)), ((0, 2), (1, 3)))
    words = transcript_words(Aligner(), np.zeros((600, 128)), t)
    assert words == [{"word": "a", "start": 0.5, "end": 0.9},
                     {"word": "b", "start": 4.25, "end": 4.5}]
