"""The codec's training loop: atomic checkpoints, exact resume, skip when done, NaN guard."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from chorus.codec.compile import fast_compile
from chorus.codec.config import StageTrainConfig
from chorus.codec.train_loop import Stage, run_stage


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    # These tests are compile-bound: XLA optimization level 0 halves their CPU time.
    with fast_compile():
        yield

TARGET = np.asarray([1.0, -2.0, 3.0], np.float32)


def _stage(steps, fail_at=None, loss_scale=1.0):
    def next_batch(rng):
        x = rng.normal(size=(4, 3)).astype(np.float32)
        if fail_at is not None and next_batch.calls == fail_at:
            raise KeyboardInterrupt("simulated interruption")
        next_batch.calls += 1
        return {"x": x, "y": x @ TARGET}

    next_batch.calls = 0

    def loss_fn(params, batch, rng):
        err = batch["x"] @ params["w"] - batch["y"]
        loss = loss_scale * jnp.mean(err**2)
        return loss, {"mse": loss}

    cfg = StageTrainConfig(steps=steps, batch_size=4, learning_rate=0.1, warmup_steps=1,
                           log_every=1, checkpoint_every=1)
    return Stage("toy", lambda key: {"w": jnp.zeros(3)}, loss_fn, next_batch, cfg)


def test_resume_after_interruption_is_exact(tmp_path):
    straight = run_stage(_stage(6), str(tmp_path / "a"), seed=0, log=lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        run_stage(_stage(6, fail_at=4), str(tmp_path / "b"), seed=0, log=lambda _: None)
    lines = []
    resumed = run_stage(_stage(6), str(tmp_path / "b"), seed=0, log=lines.append)
    assert "resuming from step 4" in lines[0]
    np.testing.assert_allclose(np.asarray(resumed["w"]), np.asarray(straight["w"]), rtol=1e-6)
    assert np.abs(np.asarray(straight["w"]) - TARGET).max() < np.abs(TARGET).max()  # it learns
    # Finished: a rerun only restores the checkpoint.
    lines = []
    again = run_stage(_stage(6, fail_at=0), str(tmp_path / "b"), seed=0, log=lines.append)
    assert "done at step 6" in lines[0]
    np.testing.assert_array_equal(np.asarray(again["w"]), np.asarray(resumed["w"]))
    assert sorted(os.listdir(tmp_path / "b")) == ["toy.ckpt", "toy.log.jsonl"]


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(FloatingPointError, match=r"\[toy\] step 1: loss is nan"):
        run_stage(_stage(3, loss_scale=float("nan")), str(tmp_path), seed=0,
                  log=lambda _: None)
