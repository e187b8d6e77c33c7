"""Supervised semantic tokenizer (CosyVoice style): log-mel @100 Hz -> FSQ codes @25 Hz.

    normalized log-mel -> Dense -> ConvNeXt @100 Hz -> stack 4 frames (25 Hz) -> ConvNeXt x N
      -> Dense(len(levels)) -> FSQ (straight-through) -> codes
    codes -> Dense -> ConvNeXt x M -> { CTC character head, mel reconstruction head }

The CTC head on the *quantized* features is what makes the codes carry content; the
reconstruction head keeps acoustic detail the flow decoder can use.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from chorus.codec import fsq, text
from chorus.codec.config import FSQConfig, TokenizerConfig
from chorus.codec.layers import ConvNeXtBlock

FRAMES_PER_CODE = 4


def code_mask(mel_mask: jax.Array) -> jax.Array:
    """(B, T) mel-frame mask -> (B, T / 4) code mask: a code is valid if its first frame is."""
    return mel_mask[:, ::FRAMES_PER_CODE]


class SemanticTokenizer(nn.Module):
    cfg: TokenizerConfig
    fsq_cfg: FSQConfig
    n_mels: int

    def setup(self):
        c = self.cfg
        # Why a plain conv at 100 Hz: the per-frame work there is 4x the code-rate work.
        self.mel_in = nn.Conv(c.dim // 2, (3,), padding=((1, 1),))
        self.stack = nn.Dense(c.dim)
        block = lambda i: ConvNeXtBlock(c.dim, c.kernel_size, c.dilations[i % len(c.dilations)],
                                        mlp_ratio=c.mlp_ratio)
        self.encoder = [block(i) for i in range(c.encoder_blocks)]
        self.pre_quant_norm = nn.LayerNorm()
        self.to_fsq = nn.Dense(self.fsq_cfg.dim)
        self.from_fsq = nn.Dense(c.dim)
        self.decoder = [block(i) for i in range(c.decoder_blocks)]
        self.post_norm = nn.LayerNorm()
        self.ctc_head = nn.Dense(text.VOCAB_SIZE)
        self.mel_head = nn.Dense(FRAMES_PER_CODE * self.n_mels)

    def encode(self, mel: jax.Array, mel_mask: jax.Array) -> jax.Array:
        """(B, T, n_mels), T % 4 == 0 -> normalized FSQ codes (B, T / 4, len(levels))."""
        b, t, _ = mel.shape
        h = nn.gelu(self.mel_in(mel * mel_mask[..., None])) * mel_mask[..., None]
        h = self.stack(h.reshape(b, t // FRAMES_PER_CODE, -1))
        cmask = code_mask(mel_mask)
        for block in self.encoder:
            h = block(h, cmask)
        z = self.to_fsq(self.pre_quant_norm(h))
        return fsq.quantize(z, self.fsq_cfg.levels)

    def decode(self, codes: jax.Array, cmask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Normalized codes (B, N, d) -> CTC logits (B, N, V), reconstructed mel (B, 4N, n_mels)."""
        h = self.from_fsq(codes) * cmask[..., None]
        for block in self.decoder:
            h = block(h, cmask)
        h = self.post_norm(h)
        b, n, _ = h.shape
        return self.ctc_head(h), self.mel_head(h).reshape(b, n * FRAMES_PER_CODE, self.n_mels)

    def __call__(self, mel: jax.Array, mel_mask: jax.Array):
        codes = self.encode(mel, mel_mask)
        logits, rec = self.decode(codes, code_mask(mel_mask))
        return codes, logits, rec

    def indices(self, mel: jax.Array, mel_mask: jax.Array) -> jax.Array:
        return fsq.codes_to_indices(self.encode(mel, mel_mask), self.fsq_cfg.levels)

    def ctc_from_indices(self, indices: jax.Array, cmask: jax.Array) -> jax.Array:
        return self.decode(fsq.indices_to_codes(indices, self.fsq_cfg.levels), cmask)[0]

