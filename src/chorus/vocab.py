"""The unified vocabulary and the token-stream layout, defined once.

    ids:  [ text (SentencePiece) | special tokens | audio codec codes | padding ]
          0 ..... text_size-1      text_size ...    audio_offset ...    (to a multiple of 128)

Audio *input* is not tokenized: the stream holds one `<audio>` placeholder per adaptor frame
(12.5 Hz), filled by the model with audio-encoder + adaptor outputs. Audio *output* is codec
ids (25 Hz) at `audio_offset + code`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<bos>", "<eos>",
    # mode tags
    "<asr>", "<tts>", "<chat>", "<judge>",
    # audio input placeholder (one per adaptor frame) and section markers
    "<audio>", "<transcript>", "<instruction>", "<speaker>", "<text>", "<tts_start>", "<tts_end>",
    "<persona>", "<user>", "<assistant>", "<rubric>", "<rationale>", "<verdict>",
    # judge verdicts and pairwise choices
    "<yes>", "<no>", "<choice_a>", "<choice_b>",
)

# Frame-rate arithmetic of the audio path: log-mel at 100 Hz -> encoder at 25 Hz (conv stride 4)
# -> adaptor at 12.5 Hz (stride 2). Data pipelines size placeholders with the same numbers.
MEL_FRAMES_PER_SECOND = 100
ENCODER_STRIDE = 4
ADAPTOR_STRIDE = 2
MEL_FRAMES_PER_PLACEHOLDER = ENCODER_STRIDE * ADAPTOR_STRIDE
CODEC_FRAMES_PER_SECOND = 25


def num_encoder_frames(num_mel_frames: int) -> int:
    return math.ceil(num_mel_frames / ENCODER_STRIDE)


def num_audio_placeholders(num_mel_frames: int) -> int:
    """Adaptor frames (= `<audio>` placeholders) for a clip of `num_mel_frames` log-mel frames."""
    return math.ceil(num_encoder_frames(num_mel_frames) / ADAPTOR_STRIDE)


@dataclasses.dataclass(frozen=True)
class VocabLayout:
    text_size: int
    num_audio_codes: int
    pad_to_multiple: int = 128  # keeps the vocab axis divisible by any tensor-parallel degree

    def __post_init__(self):
        if self.text_size <= 0:
            raise ValueError(f"VocabLayout.text_size: expected > 0, got {self.text_size}")
        if self.num_audio_codes < 0:
            raise ValueError(
                f"VocabLayout.num_audio_codes: expected >= 0, got {self.num_audio_codes}")

    @property
    def special_offset(self) -> int:
        return self.text_size

    @property
    def audio_offset(self) -> int:
        return self.text_size + len(SPECIAL_TOKENS)

    @property
    def used_size(self) -> int:
        return self.audio_offset + self.num_audio_codes

    @property
    def size(self) -> int:
        m = self.pad_to_multiple
        return (self.used_size + m - 1) // m * m

    def special(self, name: str) -> int:
        try:
            return self.special_offset + SPECIAL_TOKENS.index(name)
        except ValueError:
            raise KeyError(f"unknown special token {name!r}; known: {SPECIAL_TOKENS}") from None

    @property
    def pad_id(self) -> int:
        return self.special("<pad>")

    @property
    def eos_id(self) -> int:
        return self.special("<eos>")

    @property
    def audio_placeholder_id(self) -> int:
        return self.special("<audio>")

    def audio_code_ids(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.size and (codes.min() < 0 or codes.max() >= self.num_audio_codes):
            raise ValueError(f"audio codes: expected values in [0, {self.num_audio_codes}), got "
                             f"range [{codes.min()}, {codes.max()}]")
        return codes + self.audio_offset

    def ids_to_audio_codes(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(ids) - self.audio_offset

    def is_audio_code(self, ids):
        return (ids >= self.audio_offset) & (ids < self.used_size)

    def name_of(self, token_id: int) -> str:
        if self.special_offset <= token_id < self.audio_offset:
            return SPECIAL_TOKENS[token_id - self.special_offset]
        if self.audio_offset <= token_id < self.used_size:
            return f"<code_{token_id - self.audio_offset}>"
        if token_id < self.text_size:
            return f"<text_{token_id}>"
        return "<unused>"

    @classmethod
    def from_model_config(cls, model_config) -> VocabLayout:
        return cls(text_size=model_config.text_vocab_size,
                   num_audio_codes=model_config.num_audio_codes)
