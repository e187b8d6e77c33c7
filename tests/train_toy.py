"""Tiny experiments for the trainer tests (`--experiment train_toy`, tests/ on the path).

Default: the real backbone + LM loss on deterministic synthetic batches (`TINY` sizes).
`experiment.variant=regression`: a two-layer MLP with a frozen reference copy (the RL shape of
things), sharded over (fsdp, tensor), that compiles in a second; `experiment.nan_steps`
(a list of 1-based steps) makes its loss NaN on those steps, for the non-finite guard.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chorus.training.experiment import Experiment
from experiments.benchmarks.synthetic import synthetic_experiment

TINY = ["model.text_vocab_size=64", "model.num_audio_codes=0", "model.d_model=32",
        "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1", "model.head_dim=16",
        "model.mlp_dim=64", "audio.d_model=32", "audio.num_layers=1", "audio.num_heads=2",
        "audio.mlp_dim=64", "audio.adaptor_dim=32", "audio.n_mels=16",
        "train.batch_size=8", "train.seq_len=32", "train.max_audio_clips=1",
        "train.max_mel_frames=32", "optim.warmup_steps=2"]


class RegressionBatches:
    """Global rows are a function of (seed, step); each shard takes its contiguous slice."""

    def __init__(self, batch_size, index, count, seed):
        self.batch_size, self.seed, self.step = batch_size, seed, 0
        local = batch_size // count
        self.rows = slice(index * local, (index + 1) * local)

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.step])
        self.step += 1
        x = rng.normal(size=(self.batch_size, 8)).astype(np.float32)
        y = np.sin(x[:, :2] * 2.0).astype(np.float32)
        step_index = np.full((self.batch_size,), self.step, np.int32)
        return {"x": x[self.rows], "y": y[self.rows], "step_index": step_index[self.rows]}

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        self.step = int(state["step"])


def _mlp_init(rng):
    hidden = nn.with_logical_partitioning(nn.initializers.normal(0.5), ("embed", "mlp"))
    out = nn.with_logical_partitioning(nn.initializers.normal(0.5), ("mlp", "embed"))
    k1, k2 = jax.random.split(rng)
    return {"hidden": hidden(k1, (8, 16)), "out": out(k2, (16, 2))}


def regression_experiment(config):
    nan_steps = tuple(config.experiment.get("nan_steps", ())) or (-1,)

    def init_fn(rng):
        return {"policy": _mlp_init(rng), "reference": _mlp_init(jax.random.fold_in(rng, 1))}

    def loss_fn(params, batch, rng):
        p = params["policy"]
        pred = jnp.tanh(batch["x"] @ p["hidden"]) @ p["out"]
        drift = sum(jnp.sum((p[k] - params["reference"][k]) ** 2) for k in p)
        loss = jnp.mean((pred - batch["y"]) ** 2) + 1e-3 * drift
        poisoned = jnp.isin(batch["step_index"][0], jnp.asarray(nan_steps))
        return jnp.where(poisoned, jnp.nan, loss), {"drift": drift}

    size = config.train.batch_size
    return Experiment(name="regression", init_fn=init_fn, loss_fn=loss_fn,
                      train_iterator=lambda i, n, s: RegressionBatches(size, i, n, s),
                      frozen=("reference",))


def build(config):
    if config.experiment.get("variant") == "regression":
        return regression_experiment(config)
    return synthetic_experiment(config, name="train_toy")
