"""Deterministic synthetic batches in the batch contract, for `chorus bench train` and the
trainer tests (a fixture: it lives beside the benchmark, not in the installed chorus package).

Row r of step s is a pure function of (seed, s, r): an ASR-shaped stream
`<asr> <audio>xN <transcript> text... <eos>` whose text is an arithmetic sequence (learnable:
the loss falls), with random log-mel-like features for its one clip. Because rows are indexed
globally, any split of the batch over hosts (`shard_index`, `shard_count`) sees the same
global batch, which is what the multi-host tests compare against.
"""

from __future__ import annotations

import numpy as np

from chorus.config import Config
from chorus.model.factory import backbone_init
from chorus.model.flops import backbone_train_flops
from chorus.model.unified import UnifiedAudioLM
from chorus.training.experiment import Experiment, GlobalRowBatches
from chorus.training.lm_loss import make_lm_loss
from chorus.vocab import MEL_FRAMES_PER_PLACEHOLDER, VocabLayout


class SyntheticBatches(GlobalRowBatches):
    def __init__(self, config: Config, shard_index: int = 0, shard_count: int = 1,
                 seed: int = 0, batch_size: int | None = None):
        t = config.train
        self.batch_size = batch_size or t.batch_size
        if self.batch_size % shard_count:
            raise ValueError(f"SyntheticBatches batch_size: expected a multiple of shard_count "
                             f"{shard_count}, got {self.batch_size}")
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"SyntheticBatches shard_index: expected 0 <= index < "
                             f"{shard_count}, got {shard_index}")
        self.layout = VocabLayout.from_model_config(config.model)
        self.seq_len, self.clips, self.frames = t.seq_len, t.max_audio_clips, t.max_mel_frames
        self.n_mels = config.audio.n_mels
        self.seed = seed
        self.rows = self.shard_rows(self.batch_size, shard_index, shard_count)
        self.step = 0
        max_placeholders = self.frames // MEL_FRAMES_PER_PLACEHOLDER
        if self.seq_len < min(max_placeholders, 4) + 8:
            raise ValueError(f"SyntheticBatches seq_len: expected room for audio + text, got "
                             f"{self.seq_len}")

    def _row(self, step: int, row: int) -> dict[str, np.ndarray]:
        lay, length = self.layout, self.seq_len
        rng = np.random.default_rng([self.seed, step, row])
        max_ph = min(self.frames // MEL_FRAMES_PER_PLACEHOLDER, length - 8)
        placeholders = int(rng.integers(1, max_ph + 1))
        frames = placeholders * MEL_FRAMES_PER_PLACEHOLDER
        text_len = int(rng.integers(3, length - placeholders - 3 + 1))
        start, stride = rng.integers(0, 64, size=2)
        text = (start + stride * np.arange(text_len)) % min(64, lay.text_size)
        stream = np.concatenate([[lay.special("<asr>")],
                                 np.full(placeholders, lay.audio_placeholder_id),
                                 [lay.special("<transcript>")], text, [lay.eos_id]])
        n = len(stream)
        tokens = np.full(length, lay.pad_id, np.int32)
        tokens[:n] = stream
        targets = np.full(length, lay.pad_id, np.int32)
        targets[:n - 1] = stream[1:]
        loss_mask = np.zeros(length, np.float32)
        loss_mask[placeholders + 1:n - 1] = 1.0  # predict the text and <eos>
        audio = np.zeros((self.clips, self.frames, self.n_mels), np.float32)
        audio[0, :frames] = rng.standard_normal((frames, self.n_mels), np.float32)
        audio_mask = np.zeros((self.clips, self.frames), bool)
        audio_mask[0, :frames] = True
        return {"tokens": tokens, "targets": targets, "loss_mask": loss_mask,
                "segment_ids": (np.arange(length) < n).astype(np.int32),
                "positions": np.where(np.arange(length) < n, np.arange(length), 0).astype(
                    np.int32),
                "audio_features": audio, "audio_mask": audio_mask}



def synthetic_experiment(config: Config, name: str = "synthetic"):
    """The backbone + LM loss on `SyntheticBatches`: the trainer with no data dependency."""
    model = UnifiedAudioLM(config)
    t = config.train
    return Experiment(
        name=name, init_fn=backbone_init(model, config), loss_fn=make_lm_loss(model),
        train_iterator=lambda index, count, seed: SyntheticBatches(config, index, count, seed),
        eval_iterator=lambda index, count, seed: SyntheticBatches(config, index, count,
                                                                  seed + 1),
        flops_per_batch=backbone_train_flops(config, t.batch_size, t.seq_len,
                                             t.max_audio_clips, t.max_mel_frames))
