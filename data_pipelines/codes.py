"""Audio -> code ids for TTS targets: the pluggable `audio_to_codes(wave, sr) -> int[n]` contract.

The real codes come from the codec (chorus.codec, FSQ @ 25 Hz). Until a codec checkpoint is
passed in, `EnergyCodes` is a stand-in with the same rate and range so the TTS pipeline and
trainer can run end to end: it quantizes each 40 ms frame's log energy. It is NOT a codec
(no detokenizer exists for it). Any callable works, as long as it is picklable (module-level
function or class instance) because grain workers receive a copy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chorus.vocab import CODEC_FRAMES_PER_SECOND


@dataclasses.dataclass(frozen=True)
class EnergyCodes:
    num_codes: int
    min_db: float = -80.0
    max_db: float = 0.0

    def __post_init__(self):
        if self.num_codes < 2:
            raise ValueError(f"EnergyCodes.num_codes: expected >= 2, got {self.num_codes}")

    def __call__(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        hop = sample_rate // CODEC_FRAMES_PER_SECOND
        n = len(wave) // hop
        frames = np.asarray(wave[: n * hop], np.float64).reshape(n, hop)
        db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
        unit = np.clip((db - self.min_db) / (self.max_db - self.min_db), 0.0, 1.0)
        return np.minimum((unit * self.num_codes).astype(np.int64), self.num_codes - 1)
