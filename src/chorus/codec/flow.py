"""Conditional flow matching detokenizer: codes + speaker embedding -> normalized log-mel.

Conditioning (symmetric kernels): FSQ code vectors -> MLP + speaker -> ConvNeXt (code rate)
-> repeat x4 + frame-phase embedding -> ConvNeXt (mel rate) = mu; a linear read-out of mu is
trained to predict the mel (a "prior" loss, as in Matcha-TTS) so mu learns content fast.

Vector field (mel rate, causal kernels, FiLM on flow time): v(x_t, mu, t). Training is
OT-CFM: x_t = (1 - (1 - s) t) x0 + t x1 with target x1 - (1 - s) x0; the conditioning is
dropped for a fraction of examples so that classifier-free guidance can use the
unconditional field at sampling time (the loss: experiments/codec/losses.py). Sampling is
Euler over a (cosine) time grid.

Noise is a function of absolute code position (`frame_noise`), so a streamed decode draws the
same x0 as an offline one.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chorus.codec import fsq
from chorus.codec.config import FlowConfig, FSQConfig
from chorus.codec.layers import ConvNeXtBlock, sinusoidal

FRAMES_PER_CODE = 4


class FlowDecoder(nn.Module):
    cfg: FlowConfig
    fsq_cfg: FSQConfig
    n_mels: int

    def setup(self):
        c = self.cfg
        self.code_in = nn.Dense(c.dim)
        self.code_mix = nn.Dense(c.dim)
        self.speaker_in = nn.Dense(c.dim)
        self.cond_blocks = [ConvNeXtBlock(c.dim, c.cond_kernel_size, mlp_ratio=c.mlp_ratio)
                            for _ in range(c.cond_blocks)]
        self.cond_norm = nn.LayerNorm()
        # Which of its code's 4 frames a frame is: repeat-upsampling alone cannot tell.
        self.frame_phase = self.param("frame_phase", nn.initializers.normal(0.02),
                                      (FRAMES_PER_CODE, c.dim))
        self.frame_block = ConvNeXtBlock(c.dim, c.frame_kernel_size, mlp_ratio=c.mlp_ratio)
        self.frame_norm = nn.LayerNorm()
        self.prior_out = nn.Dense(self.n_mels)
        self.field_in = nn.Dense(c.dim)
        self.time_in = nn.Dense(c.dim)
        self.time_out = nn.Dense(c.dim)
        self.field_blocks = [ConvNeXtBlock(c.dim, c.kernel_size, d, causal=True,
                                           mlp_ratio=c.mlp_ratio) for d in c.dilations]
        self.field_norm = nn.LayerNorm()
        self.field_out = nn.Dense(self.n_mels, kernel_init=nn.initializers.zeros)

    def condition(self, indices: jax.Array, cmask: jax.Array, speaker: jax.Array) -> jax.Array:
        """Code indices (B, N), code mask (B, N), speaker (B, E) -> mu (B, 4N, dim)."""
        q = fsq.indices_to_codes(indices, self.fsq_cfg.levels)
        h = self.code_mix(nn.gelu(self.code_in(q)))
        h = (h + self.speaker_in(speaker)[:, None, :]) * cmask[..., None]
        for block in self.cond_blocks:
            h = block(h, cmask)
        h = self.cond_norm(h)
        b, n, d = h.shape
        h = (h[:, :, None, :] + self.frame_phase).reshape(b, n * FRAMES_PER_CODE, d)
        fmask = jnp.repeat(cmask, FRAMES_PER_CODE, axis=1)
        h = self.frame_block(h, fmask)
        return self.frame_norm(h) * fmask[..., None]

    def prior(self, mu: jax.Array) -> jax.Array:
        """A linear mel estimate from the conditioning (trained with the prior loss)."""
        return self.prior_out(mu)

    def field(self, x: jax.Array, mu: jax.Array, t: jax.Array, mask: jax.Array) -> jax.Array:
        """Velocity (B, T, n_mels) at flow time t (B,); causal in the time axis."""
        h = self.field_in(jnp.concatenate([x, mu], axis=-1))
        temb = self.time_out(nn.silu(self.time_in(sinusoidal(t * 1000.0, self.cfg.dim))))
        for block in self.field_blocks:
            h = block(h, mask, film=temb)
        return self.field_out(self.field_norm(h))

    def __call__(self, x, indices, cmask, speaker, t, mask):
        mu = self.condition(indices, cmask, speaker)
        return self.field(x, mu, t, mask), self.prior(mu)


def time_grid(steps: int, schedule: str) -> np.ndarray:
    u = np.linspace(0.0, 1.0, steps + 1, dtype=np.float64)
    t = 1.0 - np.cos(u * np.pi / 2) if schedule == "cosine" else u
    return t.astype(np.float32)


def frame_noise(key: jax.Array, first_code: int | jax.Array, num_codes: int,
                n_mels: int) -> jax.Array:
    """x0 for codes [first_code, first_code + num_codes): (num_codes * 4, n_mels).

    Each code's 4 frames draw from fold_in(key, absolute code index), so any chunking of the
    same utterance sees the same noise.
    """
    positions = first_code + jnp.arange(num_codes)
    draw = lambda i: jax.random.normal(jax.random.fold_in(key, i), (FRAMES_PER_CODE, n_mels))
    return jax.vmap(draw)(positions).reshape(num_codes * FRAMES_PER_CODE, n_mels)


def start_point(cfg: FlowConfig, prior: jax.Array, noise: jax.Array) -> jax.Array:
    """x0 of the flow: N(prior, noise_scale^2) with prior_start, else N(0, I)."""
    return prior + cfg.noise_scale * noise if cfg.prior_start else noise


def guided_velocity(model: FlowDecoder, params, x, mu, t, mask, guidance: float):
    """Classifier-free guidance: (1 + w) v(x | mu) - w v(x | 0); w = 0 is plain conditional."""
    apply = lambda m: model.apply({"params": params}, x, m, t, mask, method=FlowDecoder.field)
    v = apply(mu)
    if guidance > 0:
        v = (1 + guidance) * v - guidance * apply(jnp.zeros_like(mu))
    return v


def sample(model: FlowDecoder, params, indices: jax.Array, cmask: jax.Array,
           speaker: jax.Array, noise: jax.Array, steps: int, guidance: float,
           schedule: str) -> jax.Array:
    """Euler integration of the flow from noise (B, 4N, n_mels) to normalized mel."""
    mu = model.apply({"params": params}, indices, cmask, speaker, method=FlowDecoder.condition)
    prior = model.apply({"params": params}, mu, method=FlowDecoder.prior)
    mask = jnp.repeat(cmask, FRAMES_PER_CODE, axis=1)
    ts = jnp.asarray(time_grid(steps, schedule))

    def step(x, i):
        t = jnp.full((x.shape[0],), ts[i])
        v = guided_velocity(model, params, x, mu, t, mask, guidance)
        return x + (ts[i + 1] - ts[i]) * v, None

    x, _ = jax.lax.scan(step, start_point(model.cfg, prior, noise), jnp.arange(steps))
    return x * mask[..., None]
