"""A tiny repetitive token task and a brief joint training of backbone + MTP heads.

The decoding benchmark (experiments/benchmarks/decoding.py) and the decoding tests use it to
get MTP heads whose drafts are often right: each sequence follows a fixed successor
permutation over a few symbols (t_{i+1} = f(t_i)), with occasional random jumps so the model
has to read the current token. Rows pack two sequences, so the segment masking of the MTP
loss is exercised as well.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from chorus.config import Config, load_config
from chorus.model.factory import init_params
from chorus.model.heads import MTPConfig, init_mtp_params, mtp_loss
from chorus.model.losses import cross_entropy
from chorus.vocab import VocabLayout

# A small backbone (vocab 128) that learns the task in ~100 steps on CPU.
TOY_CONFIG = load_config("cpu-tiny", [
    "model.num_layers=2", "model.text_vocab_size=64", "model.num_audio_codes=0",
    "model.d_model=64", "model.mlp_dim=128", "model.num_heads=2", "model.num_kv_heads=1",
    "model.head_dim=32", "audio.num_layers=1", "audio.d_model=32", "audio.num_heads=2",
    "audio.mlp_dim=64", "audio.adaptor_dim=32"])


@dataclasses.dataclass(frozen=True)
class ToyTask:
    num_symbols: int = 24
    first_id: int = 10  # symbols are text ids first_id .. first_id + num_symbols - 1
    jump_prob: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.num_symbols < 2:
            raise ValueError(f"ToyTask.num_symbols: expected >= 2, got {self.num_symbols}")
        if not 0 <= self.jump_prob < 1:
            raise ValueError(f"ToyTask.jump_prob: expected a value in [0, 1), got "
                             f"{self.jump_prob}")

    @property
    def successor(self) -> np.ndarray:
        return np.random.default_rng(self.seed).permutation(self.num_symbols)

    def sequence(self, rng: np.random.Generator, length: int) -> np.ndarray:
        succ = self.successor
        out = np.empty(length, np.int32)
        out[0] = rng.integers(self.num_symbols)
        for i in range(1, length):
            jump = rng.random() < self.jump_prob
            out[i] = rng.integers(self.num_symbols) if jump else succ[out[i - 1]]
        return out + self.first_id

    def batch(self, rng: np.random.Generator, config: Config, batch_size: int,
              seq_len: int) -> dict[str, np.ndarray]:
        """A packed batch in the batch format of docs/design.md: two sequences per row."""
        pad = VocabLayout.from_model_config(config.model).pad_id
        out = {"tokens": np.full((batch_size, seq_len), pad, np.int32),
               "targets": np.full((batch_size, seq_len), pad, np.int32),
               "loss_mask": np.zeros((batch_size, seq_len), np.float32),
               "segment_ids": np.zeros((batch_size, seq_len), np.int32),
               "positions": np.zeros((batch_size, seq_len), np.int32),
               "audio_features": np.zeros((batch_size, 1, 8, config.audio.n_mels), np.float32),
               "audio_mask": np.zeros((batch_size, 1, 8), bool)}
        for row in range(batch_size):
            first = int(rng.integers(seq_len // 4, seq_len // 2))
            second = int(rng.integers(seq_len // 4, seq_len - first + 1))
            start = 0
            for seg, n in enumerate((first, second), start=1):
                seq = self.sequence(rng, n + 1)
                span = slice(start, start + n)
                out["tokens"][row, span] = seq[:-1]
                out["targets"][row, span] = seq[1:]
                out["loss_mask"][row, span] = 1.0
                out["segment_ids"][row, span] = seg
                out["positions"][row, span] = np.arange(n)
                start += n
        return out

    def prompts(self, rng: np.random.Generator, batch_size: int, width: int,
                min_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded prompts [B, width] of ragged lengths in [min_length, width]."""
        lengths = rng.integers(min_length, width + 1, size=batch_size).astype(np.int32)
        prompts = np.zeros((batch_size, width), np.int32)
        for row, n in enumerate(lengths):
            prompts[row, :n] = self.sequence(rng, int(n))
        return prompts, lengths


def train_toy(config: Config, mtps: tuple[MTPConfig, ...], task: ToyTask = ToyTask(), *,
              steps: int = 100, batch_size: int = 16, seq_len: int = 32,
              learning_rate: float = 3e-3, seed: int = 0):
    """Trains the backbone jointly with one MTP head set per entry of `mtps`.

    Returns (model, params, [(heads, head_params) per mtp], final metrics).
    """
    model, params, _ = init_params(config, jax.random.key(seed))
    head_sets = [init_mtp_params(config, mtp, jax.random.key(seed + 1 + i))
                 for i, mtp in enumerate(mtps)]
    heads = [h for h, _, _ in head_sets]
    state = {"backbone": params, "mtp": [p for _, p, _ in head_sets]}
    optimizer = optax.adam(optax.warmup_constant_schedule(0.0, learning_rate, 10))
    opt_state = optimizer.init(state)

    def loss_fn(state, batch):
        # Text only: skipping the (unused) audio encoder keeps the toy cheap.
        out = model.apply({"params": state["backbone"]}, batch["tokens"], batch["positions"],
                          batch["segment_ids"])
        loss, _ = cross_entropy(out["logits"], batch["targets"], batch["loss_mask"])
        metrics = {"ce": loss}
        for i, (h, hp, mtp) in enumerate(zip(heads, state["mtp"], mtps, strict=True)):
            extra, m = mtp_loss(model, state["backbone"], h, hp, out["hidden"], batch, mtp)
            loss = loss + extra
            metrics.update({f"{mtp.design}{i}/{name}": v for name, v in m.items()})
        return loss, metrics

    @jax.jit
    def step(state, opt_state, batch):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state, batch)
        updates, opt_state = optimizer.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, metrics

    rng = np.random.default_rng(seed)
    metrics = {}
    for _ in range(steps):
        batch = jax.tree.map(jnp.asarray, task.batch(rng, config, batch_size, seq_len))
        state, opt_state, metrics = step(state, opt_state, batch)
    metrics = {name: float(v) for name, v in metrics.items()}
    return model, state["backbone"], list(zip(heads, state["mtp"], strict=True)), metrics
