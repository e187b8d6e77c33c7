"""Model FLOP and parameter accounting of the backbone (for `chorus info`, `chorus compile` and
MFU): the 6·N·tokens convention.

Decoder: 2·N per matmul weight per token + causal attention, × 3 for forward + backward, over
every token of the batch. Audio encoder: the same over its 25 Hz frames, with bidirectional
attention. Padding counts as work (it is computed).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from chorus.config import Config
from chorus.model.factory import abstract_params
from chorus.model.unified import UnifiedAudioLM
from chorus.vocab import ENCODER_STRIDE, VocabLayout


def _count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def parameter_counts(params) -> dict[str, int]:
    embed = _count(params["embed"])
    head = _count(params.get("lm_head", {}))
    encoder = _count(params["audio_encoder"])
    decoder = _count(params["decoder"])
    return {"total": _count(params), "embeddings": embed, "output_head": head,
            "audio_encoder": encoder, "decoder": decoder}


def flops_per_token(config: Config, counts: dict[str, int], seq_len: int) -> dict[str, float]:
    """Decoder matmul FLOPs per text token (2·N per matmul weight) plus causal attention."""
    m = config.model
    vocab = VocabLayout.from_model_config(config.model).size
    matmul_params = counts["decoder"] + m.d_model * vocab
    attention = 2 * 2 * m.num_layers * m.num_heads * m.head_dim * seq_len / 2  # causal half
    forward = 2 * matmul_params + attention
    return {"forward": forward, "train": 3 * forward}


def backbone_train_flops(config: Config, batch_size: int, seq_len: int, num_clips: int,
                         mel_frames: int) -> float:
    counts = parameter_counts(abstract_params(UnifiedAudioLM(config), config))
    decoder = flops_per_token(config, counts, seq_len)["train"] * batch_size * seq_len
    a = config.audio
    frames = math.ceil(mel_frames / ENCODER_STRIDE)
    attention_per_frame = 2 * 2 * a.num_layers * a.d_model * frames  # bidirectional
    encoder_forward = (2 * counts["audio_encoder"] + attention_per_frame) * frames
    encoder = 3 * encoder_forward * batch_size * num_clips
    return float(decoder + encoder)
