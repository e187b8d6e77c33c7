"""What the ASR mode's docs promise, checked on values (issue 17, items 3 and 4):

    the loss   transcript CE + lambda/k * sum_j CE_j (MTP) + ctc_weight * CTC, each term
               recomputed here with optax from the model's own logits; ctc_weight 0 drops the
               CTC term; the heads stage (mtp_stage=heads) sends no gradient to the backbone
               or the CTC head
    the verbs  `chorus transcribe` prints the text of a plain greedy decode of the same
               features; a 22.05 kHz FLAC and the 16 kHz WAV of one audio give one text;
               `chorus rl --init-from RUN` starts from RUN (its initial held-out WER / CER are
               those of `chorus eval` on RUN); `chorus eval` reproduces the in-training eval

(test_ctc / test_heads check the CTC and MTP losses alone, test_asr_cli that the verbs run.)
"""

import json
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import soundfile
from asr_runs import RUN, sets

from chorus.config import load_config
from chorus.training.evaluation import close_iterator
from chorus.vocab import VocabLayout
from experiments import asr
from experiments.asr.model import AsrModel
from experiments.asr.settings import asr_settings

CTC_WEIGHT = 0.7  # not 1: a loss that drops the weight must differ


def _layout(config):
    return VocabLayout.from_model_config(config.model)


def _config(corpus, *overrides):
    return load_config("cpu-tiny", [*RUN, f"experiment.data_dir={corpus}",
                                    "experiment.module=asr", *overrides])


@pytest.fixture(scope="module")
def loss_case(tiny_asr_corpus):
    """(config, experiment, AsrModel, fresh params, the first eval batch) at ctc_weight 0.7."""
    config = _config(tiny_asr_corpus, f"experiment.ctc_weight={CTC_WEIGHT}")
    experiment = asr.build(config)
    model = AsrModel.build(config, asr_settings(config))
    params = jax.jit(lambda key: nn.meta.unbox(model.init_fn(config)(key)))(jax.random.key(0))
    batches = experiment.eval_iterator(0, 1, 0)
    try:
        batch = {k: jnp.asarray(v) for k, v in next(iter(batches)).items()}
    finally:
        close_iterator(batches)
    return config, experiment, model, params, batch


def _masked_ce(logits, targets, weight) -> float:
    """optax's per-token CE, the weighted mean in float64."""
    nll = np.asarray(optax.softmax_cross_entropy_with_integer_labels(
        jnp.asarray(logits, jnp.float32), jnp.asarray(targets)), np.float64)
    weight = np.asarray(weight, np.float64)
    return float((nll * weight).sum() / weight.sum())


def _mtp_target(targets, loss_mask, segment_ids, j):
    """Depth j at index i predicts t_{i+j+1} = targets[i+j], weighted by loss_mask[i+j], where
    indices i..i+j lie in one non-padding segment (a plain loop)."""
    b, length = targets.shape
    target = np.zeros_like(targets)
    weight = np.zeros(targets.shape, np.float64)
    for r in range(b):
        for i in range(length - j):
            if segment_ids[r, i] != 0 and (segment_ids[r, i:i + j + 1] == segment_ids[r, i]).all():
                target[r, i], weight[r, i] = targets[r, i + j], loss_mask[r, i + j]
    return target, weight


def _ctc_reference(logits, frame_mask, batch, text_size, placeholder_id, spell=None):
    """(per-label CTC, feasible clips): each clip's transcript read segment by segment (an
    ASR segment holds one clip: the text targets after its placeholders), optax's CTC per
    clip, summed over the clips CTC can align and divided by their labels. The labels are
    the text ids + 1, or `spell(text ids)` (the character CTC's classes)."""
    tokens, targets = np.asarray(batch["tokens"]), np.asarray(batch["targets"])
    loss_mask, segments = np.asarray(batch["loss_mask"]), np.asarray(batch["segment_ids"])
    logits, frame_mask = np.asarray(logits), np.asarray(frame_mask)
    frames_of, labels_of = [], []  # the feasible clips: their frame logits and labels
    for r in range(tokens.shape[0]):
        clip = 0
        for s in dict.fromkeys(segments[r][segments[r] != 0]):  # segments in stream order
            where = segments[r] == s
            if not (tokens[r][where] == placeholder_id).any():
                continue
            text = [int(t) for t, m in zip(targets[r][where], loss_mask[r][where], strict=True)
                    if m > 0 and t < text_size]
            frames = logits[r, clip][frame_mask[r, clip]]
            text = [t + 1 for t in text] if spell is None else spell(text)  # 0 is the blank
            repeats = sum(a == b for a, b in zip(text, text[1:], strict=False))
            if text and len(text) + repeats <= len(frames):
                frames_of.append(frames)
                labels_of.append(text)
            clip += 1
    n, f, w = len(frames_of), logits.shape[2], max(map(len, labels_of))
    padded = np.zeros((n, f, logits.shape[-1]), np.float32)
    frame_pad, labels, label_pad = np.ones((n, f)), np.zeros((n, w), np.int32), np.ones((n, w))
    for i, (x, y) in enumerate(zip(frames_of, labels_of, strict=True)):
        padded[i, :len(x)], frame_pad[i, :len(x)] = x, 0
        labels[i, :len(y)], label_pad[i, :len(y)] = y, 0
    nll = optax.ctc_loss(jnp.asarray(padded), jnp.asarray(frame_pad), jnp.asarray(labels),
                         jnp.asarray(label_pad))
    return float(np.asarray(nll, np.float64).sum()) / sum(map(len, labels_of)), n


def test_asr_loss_is_ce_plus_mtp_plus_weighted_ctc(loss_case):
    config, experiment, model, params, batch = loss_case
    layout = _layout(config)

    @jax.jit
    def loss_and_pieces(params, batch):
        """The eval loss and its metrics, and the logits of the backbone, the MTP heads and
        the CTC head (with the adaptor frames' mask) they were computed from."""
        from chorus.model.heads import mtp_logits

        loss, metrics = experiment.eval_loss_fn(params, batch, jax.random.key(0))
        out = model.backbone.apply({"params": params["backbone"]}, batch["tokens"],
                                   batch["positions"], batch["segment_ids"],
                                   batch["audio_features"], batch["audio_mask"])
        heads = mtp_logits(model.backbone, params["backbone"], model.heads, params["mtp"],
                           out["hidden"], batch)
        ctc = model.ctc_head.apply({"params": params["ctc"]}, out["audio_frames"])
        return loss, metrics, out["logits"], heads, ctc, out["audio_frame_mask"]

    loss, metrics, logits, head_logits, ctc_logits, frame_mask = loss_and_pieces(params, batch)
    targets, loss_mask = np.asarray(batch["targets"]), np.asarray(batch["loss_mask"])
    ce = _masked_ce(logits, targets, loss_mask)
    k, weight = model.mtp.num_heads, model.mtp.loss_weight
    head_ce = [_masked_ce(head_logits[j - 1], *_mtp_target(
        targets, loss_mask, np.asarray(batch["segment_ids"]), j)) for j in range(1, k + 1)]
    mtp = weight / k * sum(head_ce)
    ctc, clips = _ctc_reference(ctc_logits, frame_mask, batch, layout.text_size,
                                layout.audio_placeholder_id)
    assert clips > 0 and mtp > 0 and ctc > 0
    # fp32 terms summed in another order than here (float64 over optax's per-token values):
    # measured within 1.2e-7 (one float32 ulp); a missing or re-weighted term moves it by > 1e-2
    rtol = 1e-6
    np.testing.assert_allclose(float(metrics["ce"]), ce, rtol=rtol)
    np.testing.assert_allclose([float(metrics[f"mtp/ce_{j}"]) for j in range(1, k + 1)],
                               head_ce, rtol=rtol)
    np.testing.assert_allclose(float(metrics["mtp/loss"]), mtp, rtol=rtol)
    np.testing.assert_allclose(float(metrics["ctc/loss"]), ctc, rtol=rtol)
    assert float(metrics["ctc/clips"]) == clips
    np.testing.assert_allclose(float(loss), ce + mtp + CTC_WEIGHT * ctc, rtol=rtol)
    assert float(metrics["loss"]) == float(loss)

    # ctc_weight 0: no CTC head, no CTC metrics, loss = CE + MTP of the same params
    off = asr.build(_config(config.experiment["data_dir"], "experiment.ctc_weight=0"))
    kept = {name: params[name] for name in ("backbone", "mtp")}
    loss0, metrics0 = jax.jit(off.eval_loss_fn)(kept, batch, jax.random.key(0))
    assert not any(name.startswith("ctc/") for name in metrics0)
    np.testing.assert_allclose(float(loss0), ce + mtp, rtol=rtol)


def test_char_ctc_adds_its_weighted_term_over_the_encoder_frames(loss_case):
    """experiment.char_ctc_weight=0.5: loss = the same CE + MTP + CTC + 0.5 * optax's CTC of
    each clip's transcript spelled in characters (the tokenizer's pieces joined, "▁" a space,
    the leading one dropped) over its 25 Hz encoder frames; the heads stage freezes it."""
    from test_ctc import _spelled

    from data_pipelines.tokenizer import TextTokenizer

    config, experiment, model, params, batch = loss_case
    corpus = config.experiment["data_dir"]
    weight = 0.5
    char_config = _config(corpus, f"experiment.ctc_weight={CTC_WEIGHT}",
                          f"experiment.char_ctc_weight={weight}")
    char_model = AsrModel.build(char_config, asr_settings(char_config))
    fresh = jax.jit(lambda key: nn.meta.unbox(char_model.init_fn(char_config)(key)))(
        jax.random.key(0))
    assert sorted(fresh) == ["backbone", "ctc", "ctc_char", "mtp"]
    char_params = {**params, "ctc_char": fresh["ctc_char"]}
    loss, metrics = jax.jit(asr.build(char_config).eval_loss_fn)(char_params, batch,
                                                                  jax.random.key(0))
    plain, _ = jax.jit(experiment.eval_loss_fn)(params, batch, jax.random.key(0))
    out = jax.jit(model.backbone.apply)({"params": params["backbone"]}, batch["tokens"],
                                        batch["positions"], batch["segment_ids"],
                                        batch["audio_features"], batch["audio_mask"])
    logits = char_model.char_ctc_head.apply({"params": fresh["ctc_char"]}, out["encoder_frames"])
    tokenizer = TextTokenizer.from_file(f"{corpus}/tokenizer.model")
    pieces = tokenizer.pieces(range(tokenizer.vocab_size))
    layout = _layout(config)
    char, clips = _ctc_reference(logits, out["encoder_frame_mask"], batch, layout.text_size,
                                 layout.audio_placeholder_id, lambda t: _spelled(pieces, t))
    assert clips > 0 and char > 0
    np.testing.assert_allclose(float(metrics["ctc_char/loss"]), char, rtol=1e-6)
    assert float(metrics["ctc_char/clips"]) == clips
    np.testing.assert_allclose(float(loss), float(plain) + weight * char, rtol=1e-6)


def test_label_smoothing_smooths_the_transcript_ce_alone(loss_case):
    """experiment.label_smoothing=0.2: loss = optax's CE against 0.8 one-hot + 0.2 / V +
    the same MTP and CTC terms as unsmoothed; the logged ce stays the plain NLL."""
    config, experiment, model, params, batch = loss_case
    eps = 0.2
    smooth = asr.build(_config(config.experiment["data_dir"], f"experiment.ctc_weight={CTC_WEIGHT}",
                               f"experiment.label_smoothing={eps}"))
    loss, metrics = jax.jit(smooth.eval_loss_fn)(params, batch, jax.random.key(0))
    plain_loss, plain = jax.jit(experiment.eval_loss_fn)(params, batch, jax.random.key(0))
    out = jax.jit(model.backbone.apply)({"params": params["backbone"]}, batch["tokens"],
                                        batch["positions"], batch["segment_ids"],
                                        batch["audio_features"], batch["audio_mask"])
    logits = jnp.asarray(out["logits"], jnp.float32)
    labels = optax.smooth_labels(jax.nn.one_hot(batch["targets"], logits.shape[-1]), eps)
    nll = np.asarray(optax.softmax_cross_entropy(logits, labels), np.float64)
    weight = np.asarray(batch["loss_mask"], np.float64)
    smoothed_ce = float((nll * weight).sum() / weight.sum())
    rest = float(plain["mtp/loss"]) + CTC_WEIGHT * float(plain["ctc/loss"])
    np.testing.assert_allclose(float(loss), smoothed_ce + rest, rtol=1e-6)
    assert float(metrics["ce"]) == float(plain["ce"])
    assert float(metrics["mtp/loss"]) == float(plain["mtp/loss"])
    assert abs(float(loss) - float(plain_loss)) > 1e-2


def test_label_smoothing_is_validated(tiny_asr_corpus):
    from chorus.config import ConfigError

    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match="experiment.label_smoothing"):
            asr_settings(_config(tiny_asr_corpus, f"experiment.label_smoothing={bad}"))


def _abs_sum(tree) -> float:
    return float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(tree)))


def test_heads_stage_trains_the_heads_alone(loss_case, tiny_asr_run):
    """mtp_stage=heads: the training loss is the MTP loss; its gradient reaches every MTP
    head and nothing of the backbone or the CTC head (whose params it is given)."""
    config, _, model, params, batch = loss_case
    # (the heads stage needs a backbone run to be valid; the loss never reads it)
    heads = asr.build(_config(config.experiment["data_dir"], "experiment.mtp_stage=heads",
                              f"experiment.backbone_from={tiny_asr_run}"))
    fn = jax.jit(jax.value_and_grad(heads.loss_fn, has_aux=True))
    (loss, metrics), grads = fn(params, batch, jax.random.key(1))
    assert float(loss) == float(metrics["mtp/loss"]) > 0
    assert not any(name.startswith("ctc/") for name in metrics)
    # exactly zero: stop_gradient on the backbone, no CTC term
    assert _abs_sum(grads["backbone"]) == 0.0
    assert _abs_sum(grads["ctc"]) == 0.0
    for j in range(model.mtp.num_heads):
        assert _abs_sum(grads["mtp"][f"heads_{j}"]) > 0, j


# ----------------------------------------------------------------------------- the verbs

# tiny_asr_run's tied 3-step model emits one special token forever (empty text for every
# input: no output test could tell it from a broken pipeline). Untied, the near-random model's
# greedy text depends on the audio. Seed 1: a policy freshly initialized by `chorus rl`
# (seed 0) differs from it.
PROBE = [*RUN, "model.tie_embeddings=false"]


@pytest.fixture(scope="module")
def probe_run(tiny_asr_corpus, tmp_path_factory):
    """2 ASR steps with the trainer's eval (the whole validation split) at step 2."""
    from chorus.training.cli import train_main

    workdir = tmp_path_factory.mktemp("asr_probe")
    assert train_main(["--experiment", "asr", "--workdir", str(workdir), "--data",
                       tiny_asr_corpus, "--quiet",
                       *sets(*PROBE, "train.seed=1", "train.steps=2", "train.eval_every=2")]) == 0
    return workdir


@pytest.fixture(scope="module")
def eval_report(probe_run):
    """`chorus eval --workdir probe_run`: the eval loop and the decoding table."""
    from chorus.training.cli import eval_main

    assert eval_main(["--workdir", str(probe_run)]) == 0
    with open(probe_run / "eval" / "step_2.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    """speech.wav (16 kHz), silence.wav (as long), speech_22k.flac (the speech at 22.05 kHz)."""
    import librosa

    from data_pipelines.synthesis import synthesize

    folder = tmp_path_factory.mktemp("audio")
    wave, _ = synthesize("set a timer for ten minutes", voice="en-us+m3", rate=140)
    files = {"speech": folder / "speech.wav", "silence": folder / "silence.wav",
             "flac": folder / "speech_22k.flac"}
    soundfile.write(files["speech"], wave, 16_000, subtype="PCM_16")
    soundfile.write(files["silence"], np.zeros_like(wave), 16_000, subtype="PCM_16")
    soundfile.write(files["flac"], librosa.resample(wave, orig_sr=16_000, target_sr=22_050),
                    22_050)
    return files


@pytest.fixture(scope="module")
def transcribed(probe_run, audio_files):
    """{name: text} of one `chorus transcribe` call (verified decoding) on the three files."""
    import contextlib
    import io

    from experiments.asr import cli as asr_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the gate off: silence is decoded like speech
        assert asr_cli.main(["--workdir", str(probe_run), "--mode", "verified",
                             "--set", "experiment.speech_gate=null",
                             *map(str, audio_files.values())]) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["file"] for line in lines] == [str(p) for p in audio_files.values()]
    return {name: line["text"] for name, line in zip(audio_files, lines, strict=True)}


def _transcribe_json(*argv) -> list[dict]:
    import contextlib
    import io

    from experiments.asr import cli as asr_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert asr_cli.main(list(map(str, argv))) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_speech_gate_empties_silence_and_keeps_the_order(probe_run, audio_files,
                                                             transcribed):
    """Gate on (the default): silence gives "" without decoding, in its place among the
    files; the speech files' texts are unchanged."""
    lines = _transcribe_json("--workdir", probe_run, "--mode", "verified", *audio_files.values())
    assert [line["file"] for line in lines] == [str(p) for p in audio_files.values()]
    by_name = dict(zip(audio_files, lines, strict=True))
    assert by_name["silence"]["text"] == "" and by_name["silence"]["speech"] is False
    assert by_name["silence"]["no_speech_reason"] == "no_speech"
    assert transcribed["silence"]  # the gate is what empties it: the model says words
    for name in ("speech", "flac"):
        assert by_name[name]["speech"] is True
        assert by_name[name]["text"] == transcribed[name]


def test_words_time_the_transcript_itself(probe_run, audio_files, transcribed):
    """--words: the words of the printed text, in order, inside the clip (CTC forced
    alignment of the decoder's output)."""
    (line,) = _transcribe_json("--workdir", probe_run, "--mode", "verified", "--words",
                              audio_files["speech"])
    assert line["words"] and [w["word"] for w in line["words"]] == line["text"].split()
    assert line["text"] == transcribed["speech"]
    assert all(0 <= w["start"] < w["end"] <= line["audio_seconds"] + 1e-6
               for w in line["words"])
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(line["words"], line["words"][1:],
                                                            strict=False))


def _greedy_texts(run_dir, corpus, paths) -> list[str]:
    """Plain greedy decoding (chorus.decoding.greedy_decode, no MTP drafts) of 16 kHz files
    of one length, read with soundfile, one unpadded batch behind the regime's prompt."""
    import os

    from chorus.audio.mel import log_mel
    from chorus.decoding import greedy_decode
    from chorus.model.unified import UnifiedAudioLM
    from chorus.training.restore import load_run
    from data_pipelines.tokenizer import TextTokenizer
    from experiments.asr.regime import asr_prompt

    run = load_run(str(run_dir))
    layout = _layout(run.config)
    waves = []
    for path in paths:
        wave, rate = soundfile.read(path, dtype="float32")
        assert rate == 16_000
        waves.append(wave)
    frames = np.stack([log_mel(w) for w in waves])  # [B, T, n_mels]
    b, t = frames.shape[:2]
    prompt = asr_prompt(layout, t)
    width = -(-t // 8) * 8  # the encoder takes whole 8-frame placeholders: pad, masked
    features = np.zeros((b, 1, width, frames.shape[2]), np.float32)
    features[:, 0, :t] = frames
    result = greedy_decode(
        UnifiedAudioLM(run.config), run.params["backbone"],
        jnp.asarray(np.tile(prompt, (b, 1))), jnp.full((b,), len(prompt), jnp.int32),
        max_new_tokens=run.config.decode.max_new_tokens, audio_features=jnp.asarray(features),
        audio_mask=jnp.asarray(np.arange(width) < t)[None, None].repeat(b, 0))
    tokenizer = TextTokenizer.from_file(os.path.join(corpus, "tokenizer.model"))
    texts = []
    for row, n in zip(np.asarray(result.tokens), np.asarray(result.lengths), strict=True):
        ids = [int(t) for t in row[:n]]
        ids = ids[:ids.index(layout.eos_id)] if layout.eos_id in ids else ids
        texts.append(tokenizer.decode([t for t in ids if t < layout.text_size]))
    return texts


def test_transcribe_prints_the_greedy_decode_of_the_same_features(
        transcribed, probe_run, tiny_asr_corpus, audio_files):
    greedy = _greedy_texts(probe_run, tiny_asr_corpus,
                           [audio_files["speech"], audio_files["silence"]])
    assert [transcribed["speech"], transcribed["silence"]] == greedy
    # the texts depend on the audio, so a pipeline that lost or misplaced it would differ
    assert greedy[0] and greedy[0] != greedy[1]


def test_a_22khz_flac_and_the_16khz_wav_of_one_audio_give_one_text(transcribed):
    assert transcribed["flac"] == transcribed["speech"]
    assert transcribed["speech"] != transcribed["silence"]


def test_chorus_eval_reproduces_the_in_training_eval(probe_run, eval_report):
    from chorus.training.metrics import read_jsonl

    (logged,) = [r for r in read_jsonl(str(probe_run / "metrics.jsonl"))
                 if r.get("event") == "eval"]
    assert logged["step"] == eval_report["step"] == 2
    assert logged["batches"] == eval_report["batches"] >= 1  # the whole validation split
    names = sorted(k for k, v in logged.items()
                   if isinstance(v, float) and k not in ("time", "step"))
    assert {"loss", "ce", "mtp/loss", "ctc/loss", "accuracy"} <= set(names)
    # The same loss on the same params and batches (eval never augments, so the key is
    # irrelevant): measured bit-identical; 1e-6 leaves room for another compilation's rounding.
    np.testing.assert_allclose([eval_report[k] for k in names], [logged[k] for k in names],
                               rtol=1e-6)


def test_rl_init_from_starts_from_the_given_run(probe_run, eval_report, tmp_path, monkeypatch):
    """The RL run's held-out scores before any step are the probe run's: `chorus eval`'s
    test-split hypotheses give the same per-utterance WER and CER (the RL eval pool and the
    eval table are the first two test examples; greedy decoding in both)."""
    from chorus.eval.text_metrics import utterance_error_rates
    from chorus.rl import cli as rl_cli

    # Only the initial evaluation is under test: skip the RL steps and the final eval.
    monkeypatch.setattr(rl_cli, "_run", lambda *args: types.SimpleNamespace(
        status="interrupted", step=0))
    workdir = tmp_path / "grpo"
    assert rl_cli.main([
        "--experiment", "asr", "--algo", "grpo", "--workdir", str(workdir), "--quiet",
        "--init-from", str(probe_run),
        *sets(*PROBE, "train.steps=1", "experiment.group_size=2", "experiment.rl_train_pool=2",
              "experiment.rl_eval_pool=2", "experiment.eval_prompts=2",
              "experiment.rewards={neg_wer: 1.0, neg_cer: 1.0}")]) == 0
    with open(workdir / rl_cli.INITIAL_EVAL) as f:
        initial = json.load(f)
    examples = eval_report["test"]["examples"]
    assert len(examples) == 2
    refs = [e["reference"] for e in examples]
    hyps = [e["hypothesis"] for e in examples]
    # WER is 1.0 for any short garbage hypothesis (a fresh policy's too); CER tells them apart
    for kind in ("wer", "cer"):
        want = -float(np.mean(utterance_error_rates(refs, hyps, kind)))
        # the same strings, the same per-utterance rates: exact up to the mean's rounding
        assert initial[f"heldout/greedy/reward/neg_{kind}"] == pytest.approx(want, abs=1e-12)
