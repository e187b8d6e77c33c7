"""cpu-tiny (at 2 layers) memorizes a small fixed batch (audio + text): in 100 steps the loss
falls from 11.2 to < 0.15 nats a token and the greedy prediction is every target."""

import jax
import numpy as np
import pytest

from chorus.config import load_config
from chorus.model import example_batch, init_params
from chorus.training.lm_loss import make_lm_loss
from chorus.training.optimizer import make_optimizer
from chorus.training.step import TrainState, make_train_step
from chorus.vocab import VocabLayout

STEPS = 100


@pytest.mark.slow
def test_cpu_tiny_memorizes_a_fixed_batch():
    cfg = load_config("cpu-tiny", [f"train.steps={STEPS}", "model.num_layers=2"])
    layout = VocabLayout.from_model_config(cfg.model)
    rng = np.random.default_rng(0)
    batch = example_batch(cfg, 4, 48, num_clips=1, mel_frames=64)
    batch["tokens"] = rng.integers(0, layout.text_size, size=(4, 48)).astype(np.int32)
    batch["tokens"][:, 1:9] = layout.audio_placeholder_id
    batch["targets"] = np.roll(batch["tokens"], -1, axis=1)
    batch["loss_mask"][:, 9:-1] = 1.0
    batch["audio_features"] = rng.normal(size=batch["audio_features"].shape).astype(np.float32)

    model, params, _ = init_params(cfg, jax.random.key(0))
    tx = make_optimizer(cfg.optim, cfg.train.steps)
    step = jax.jit(make_train_step(make_lm_loss(model), tx), donate_argnums=0)
    state = TrainState.create(params, tx)
    losses = []
    for i in range(STEPS):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert int(state.nonfinite_total) == 0
    # measured: 11.17 -> 0.083 (80 steps: 0.19; 60: 0.34 with 98.7 % of the targets)
    assert losses[-1] < 0.15 and losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])
    forward = jax.jit(lambda p, b: model.apply(
        {"params": p}, b["tokens"], b["positions"], b["segment_ids"], b["audio_features"],
        b["audio_mask"])["logits"])
    logits = forward(state.params, batch)
    scored = batch["loss_mask"] > 0
    np.testing.assert_array_equal(np.asarray(logits).argmax(-1)[scored],
                                  batch["targets"][scored])
