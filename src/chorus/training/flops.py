"""Model FLOPs of one train step of the backbone (for MFU): the 6·N·tokens convention.

Decoder: `chorus info`'s FLOPs per token (2·N per matmul weight + causal attention) × 3 for
forward + backward, over every token of the batch. Audio encoder: the same over its 25 Hz
frames, with bidirectional attention. Padding counts as work (it is computed).
"""

from __future__ import annotations

import math

from chorus.commands.info import flops_per_token, parameter_counts
from chorus.config import Config
from chorus.model.factory import abstract_params
from chorus.model.unified import UnifiedAudioLM
from chorus.vocab import ENCODER_STRIDE


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
