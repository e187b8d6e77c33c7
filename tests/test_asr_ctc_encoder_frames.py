"""CTC over the 25 Hz encoder frames (`experiment.ctc_frames=encoder`): the backbone hands out
the frames the adaptor reads, the label buffer is as wide as them, the transcriber's CTC mode
reads the same frames as training (a per-frame loop over the training forward as reference)
and times words by 40 ms frames."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from asr_runs import RUN, sets

from chorus.config import ConfigError, settings_from
from chorus.model.ctc import clip_transcripts
from experiments.asr.ctc_timestamps import FRAME_SECONDS
from experiments.asr.regime import eval_examples
from experiments.asr.settings import AsrSettings, asr_settings
from experiments.asr.transcriber import load_transcriber, pad_requests


@pytest.fixture(scope="module")
def encoder_ctc_run(tiny_asr_corpus, tmp_path_factory):
    from chorus.training.cli import train_main

    workdir = tmp_path_factory.mktemp("asr_ctc_encoder")
    assert train_main(["--experiment", "asr", "--workdir", str(workdir), "--data",
                       tiny_asr_corpus, "--quiet",
                       *sets(*RUN, "train.steps=3", "experiment.ctc_frames=encoder")]) == 0
    with open(workdir / "metrics.jsonl") as f:
        steps = [json.loads(line) for line in f if '"event"' not in line]
    assert all(np.isfinite(r["ctc/loss"]) and r["ctc/clips"] > 0 for r in steps)
    return load_transcriber(str(workdir))


def _training_forward(transcriber, example):
    one = pad_requests([example], transcriber.layout, transcriber.max_frames)
    tokens = jnp.asarray(one["prompts"][:, :one["lengths"][0]])
    return transcriber.asr.backbone.apply(
        {"params": transcriber.params["backbone"]}, tokens, jnp.arange(tokens.shape[1])[None],
        jnp.ones_like(tokens), jnp.asarray(one["audio_features"]),
        jnp.asarray(one["audio_mask"]))


def test_the_backbone_returns_the_encoder_frames_the_adaptor_read(encoder_ctc_run):
    transcriber, run = encoder_ctc_run
    example = eval_examples(run.config, asr_settings(run.config), "test", 1)[0]
    out = _training_forward(transcriber, example)
    adaptor, encoder = out["audio_frame_mask"], out["encoder_frame_mask"]
    assert encoder.shape[-1] == 2 * adaptor.shape[-1]
    assert out["encoder_frames"].shape[-1] == run.config.audio.d_model
    # adaptor frame m reads encoder frames 2m-2 .. 2m: valid iff encoder frame 2m is
    np.testing.assert_array_equal(np.asarray(adaptor), np.asarray(encoder)[..., ::2])
    frames = np.asarray(out["encoder_frames"])
    assert not np.any(frames[~np.asarray(encoder)])  # padding stays zero


def test_ctc_mode_reads_the_encoder_frames_of_training(encoder_ctc_run):
    transcriber, run = encoder_ctc_run
    examples = eval_examples(run.config, asr_settings(run.config), "test", 2)
    result = transcriber.decode(pad_requests(examples, transcriber.layout,
                                             transcriber.max_frames), mode="ctc")
    for i, example in enumerate(examples):
        out = _training_forward(transcriber, example)
        logits = transcriber.asr.ctc_head.apply({"params": transcriber.params["ctc"]},
                                                out["encoder_frames"])[0, 0]
        valid = np.asarray(out["encoder_frame_mask"])[0, 0]
        ids, prev = [], 0
        for t in np.flatnonzero(valid):
            c = int(np.argmax(logits[t]))
            if c not in (0, prev):
                ids.append(c - 1)
            prev = c
        assert np.asarray(result.ids[i, :int(result.lengths[i])]).tolist() == ids
    assert transcriber.ctc_frame_seconds == pytest.approx(FRAME_SECONDS / 2)
    request = pad_requests(examples, transcriber.layout, transcriber.max_frames)
    words = transcriber.word_timestamps(request, result)
    seconds = np.asarray(request["audio_mask"]).reshape(len(examples), -1).sum(-1) / 100
    for i, row in enumerate(words):
        for w in row:  # a token's frame t starts at t * 40 ms
            assert 0 <= w["start"] <= w["end"] <= seconds[i] + 1e-9, (w, seconds[i])
            assert w["start"] / 0.04 == pytest.approx(round(w["start"] / 0.04)), w


def test_the_label_buffer_is_as_wide_as_the_frames_ctc_reads():
    # one row, one clip of 3 adaptor frames (placeholder id 9) and its transcript 4 5 6 7
    tokens = jnp.asarray([[1, 9, 9, 9, 2, 4, 5, 6, 7]])
    targets = jnp.concatenate([tokens[:, 1:], jnp.full((1, 1), -1)], axis=1)
    loss_mask = jnp.asarray([[0, 0, 0, 0, 1, 1, 1, 1, 0]])
    frame_mask = jnp.ones((1, 1, 3), bool)
    args = (tokens, targets, loss_mask, jnp.ones_like(tokens), frame_mask)
    narrow = clip_transcripts(*args, placeholder_id=9, text_size=100)
    wide = clip_transcripts(*args, placeholder_id=9, text_size=100, width=6)
    # 4 labels cannot fit in 3 frames' buffer: the narrow one drops the last, the wide keeps it
    assert narrow.labels.tolist() == [[[5, 6, 7]]] and int(narrow.lengths[0, 0]) == 4
    assert wide.labels.tolist() == [[[5, 6, 7, 8, 0, 0]]] and int(wide.lengths[0, 0]) == 4


def test_ctc_frames_is_checked():
    with pytest.raises(ConfigError, match="experiment.ctc_frames"):
        settings_from(AsrSettings, {"ctc_frames": "decoder"})
