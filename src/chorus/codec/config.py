"""The codec networks' configuration: frozen, validated dataclasses.

One `CodecConfig` describes the speech tokenizer (log-mel -> FSQ codes @25 Hz), the
flow-matching detokenizer, the vocoder, the speaker encoder and the streaming schedule: each
network's architecture and the constants of its training objective (loss weights, crop
sizes). How the networks are trained (data, steps, learning rates) belongs to the codec
experiment (`experiments/codec/settings.py`), whose settings carry these sections under
`config.experiment`, so `--set experiment.flow.dim=64` reaches `FlowConfig.dim`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from chorus.config import AudioEncoderConfig, check, dataclass_from_dict, positive
from chorus.vocab import CODEC_FRAMES_PER_SECOND, MEL_FRAMES_PER_SECOND


def _in_unit(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        check(0 <= value < 1, f"{obj._prefix}.{name}", "a value in [0, 1)", value)


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """The codec's input: the project's one log-mel (`chorus.audio.mel`: 16 kHz, 25 ms Hann,
    10 ms hop, 128 Slaney mels, natural log of mel *power*), restated so a config says what
    its models were trained on, and normalized as the audio encoder's input is
    (`(log-mel - mean) / std`, the `audio.mel_mean` / `audio.mel_std` defaults): a fixed,
    frame-local affine map, so no statistics of a training corpus travel with the codec."""

    _prefix = "mel"
    sample_rate: int = 16_000
    hop_length: int = 160  # 100 Hz at 16 kHz
    n_mels: int = 128
    mean: float = AudioEncoderConfig.mel_mean
    std: float = AudioEncoderConfig.mel_std

    def __post_init__(self):
        from chorus.audio import mel as features  # numpy only: cheap to import

        for name, value in (("sample_rate", features.SAMPLE_RATE),
                            ("hop_length", features.HOP_LENGTH), ("n_mels", features.N_MELS)):
            check(getattr(self, name) == value, f"mel.{name}",
                  f"{value} (the chorus.audio.mel feature definition)", getattr(self, name))
        check(self.sample_rate == self.hop_length * MEL_FRAMES_PER_SECOND, "mel.hop_length",
              f"sample_rate / {MEL_FRAMES_PER_SECOND}", self.hop_length)
        positive(self, "std")

    @property
    def frames_per_code(self) -> int:
        return MEL_FRAMES_PER_SECOND // CODEC_FRAMES_PER_SECOND

    @property
    def samples_per_code(self) -> int:
        return self.hop_length * self.frames_per_code

    def normalize(self, log_mel):
        """Raw log-mel -> what the networks see (NumPy or JAX arrays alike)."""
        return (log_mel - self.mean) / self.std

    def denormalize(self, mel):
        return mel * self.std + self.mean


@dataclasses.dataclass(frozen=True)
class FSQConfig:
    """Finite scalar quantization: one integer per dimension; codebook size = prod(levels)."""

    _prefix = "fsq"
    levels: tuple[int, ...] = (8, 5, 5, 5)

    def __post_init__(self):
        check(len(self.levels) >= 1, "fsq.levels", "a non-empty list of levels", self.levels)
        for i, level in enumerate(self.levels):
            check(isinstance(level, int) and level >= 2, f"fsq.levels[{i}]", "an int >= 2",
                  level)
        check(self.num_codes < 2**31, "fsq.levels", "a product below 2**31", self.levels)

    @property
    def num_codes(self) -> int:
        return math.prod(self.levels)

    @property
    def dim(self) -> int:
        return len(self.levels)


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """log-mel -> ConvNeXt encoder -> /4 (25 Hz) -> FSQ -> {CTC text head, mel reconstruction}."""

    _prefix = "tokenizer"
    dim: int = 128
    mlp_ratio: int = 2
    encoder_blocks: int = 6
    decoder_blocks: int = 2
    kernel_size: int = 5
    dilations: tuple[int, ...] = (1, 2)  # cycled over the encoder blocks (at 25 Hz)
    reconstruction_weight: float = 1.0
    max_frames: int = 480  # training pads / drops utterances to this many mel frames

    def __post_init__(self):
        positive(self, "dim", "mlp_ratio", "encoder_blocks", "decoder_blocks", "kernel_size",
                 "max_frames")
        check(self.kernel_size % 2 == 1, "tokenizer.kernel_size", "an odd number",
              self.kernel_size)
        check(len(self.dilations) > 0 and min(self.dilations) >= 1, "tokenizer.dilations",
              "a non-empty list of ints >= 1", self.dilations)
        check(self.reconstruction_weight >= 0, "tokenizer.reconstruction_weight",
              "a number >= 0", self.reconstruction_weight)
        check(self.max_frames % 4 == 0, "tokenizer.max_frames", "a multiple of 4",
              self.max_frames)


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Conditional flow matching codes (+ speaker) -> mel.

    Conditioning runs at code rate with symmetric kernels (its right reach is the streaming
    lookahead); the vector field is causal in time, so streaming reproduces offline exactly
    with per-Euler-step caches of its left receptive field.
    """

    _prefix = "flow"
    dim: int = 96
    mlp_ratio: int = 2
    cond_blocks: int = 2
    cond_kernel_size: int = 3
    frame_kernel_size: int = 9  # symmetric block at mel rate after upsampling (reach 1 code)
    prior_weight: float = 1.0  # MSE of a linear mel estimate from the conditioning
    # Flow starts from x0 = prior + noise_scale * N(0, I) (Grad-TTS style) instead of N(0, I):
    # the flow only has to add the detail the prior lacks, which few Euler steps can do.
    prior_start: bool = True
    noise_scale: float = 0.5
    kernel_size: int = 5  # causal depthwise kernels of the vector field
    dilations: tuple[int, ...] = (1, 2, 4, 1, 2, 4)  # one block per entry
    sigma_min: float = 1e-4
    cond_dropout: float = 0.15  # classifier-free guidance training
    sample_steps: int = 10
    guidance: float = 0.0  # CFG weight w: v = (1 + w) v_cond - w v_uncond
    time_schedule: str = "cosine"  # "cosine" (t = 1 - cos(pi/2 u)) or "linear"
    crop_frames: int = 160  # training crops (the model is local, so crops lose nothing)

    def __post_init__(self):
        positive(self, "dim", "mlp_ratio", "cond_blocks", "cond_kernel_size",
                 "frame_kernel_size", "kernel_size", "sample_steps", "crop_frames")
        for name in ("cond_kernel_size", "frame_kernel_size"):
            check(getattr(self, name) % 2 == 1, f"flow.{name}", "an odd number",
                  getattr(self, name))
        check(self.prior_weight >= 0, "flow.prior_weight", "a number >= 0", self.prior_weight)
        check(self.noise_scale > 0, "flow.noise_scale", "a positive number", self.noise_scale)
        check(not self.prior_start or self.prior_weight > 0, "flow.prior_weight",
              "> 0 when flow.prior_start (the prior must be trained)", self.prior_weight)
        check(len(self.dilations) > 0 and min(self.dilations) >= 1, "flow.dilations",
              "a non-empty list of ints >= 1", self.dilations)
        check(0 <= self.sigma_min < 0.1, "flow.sigma_min", "a value in [0, 0.1)",
               self.sigma_min)
        _in_unit(self, "cond_dropout")
        check(self.guidance >= 0, "flow.guidance", "a number >= 0", self.guidance)
        check(self.time_schedule in ("cosine", "linear"), "flow.time_schedule",
              "one of ['cosine', 'linear']", self.time_schedule)
        check(self.crop_frames % 4 == 0, "flow.crop_frames", "a multiple of 4",
              self.crop_frames)
        check(self.guidance == 0 or self.cond_dropout > 0, "flow.cond_dropout",
              "> 0 when flow.guidance > 0 (the unconditional field must be trained)",
              self.cond_dropout)

    @property
    def lookahead_codes(self) -> int:
        """Codes to the right that one output frame depends on (the conditioning's reach)."""
        frame_reach = -(-(self.frame_kernel_size // 2) // 4)
        return self.cond_blocks * (self.cond_kernel_size // 2) + frame_reach

    @property
    def receptive_frames(self) -> int:
        """Past frames one vector-field evaluation looks at (its causal receptive field)."""
        return sum((self.kernel_size - 1) * d for d in self.dilations)


@dataclasses.dataclass(frozen=True)
class VocoderConfig:
    """Vocos-style vocoder: ConvNeXt over log-mel -> STFT magnitude + phase -> iSTFT."""

    _prefix = "vocoder"
    dim: int = 128
    mlp_ratio: int = 2
    blocks: int = 4
    kernel_size: int = 7
    n_fft: int = 640  # iSTFT head: 4x overlap at hop 160
    segment_frames: int = 48
    mel_weight: float = 1.0
    stft_weight: float = 0.5
    stft_resolutions: tuple[int, ...] = (256, 512, 1024)  # FFT sizes of the multi-res loss
    griffin_lim_iters: int = 32

    def __post_init__(self):
        positive(self, "dim", "mlp_ratio", "blocks", "kernel_size", "n_fft", "segment_frames",
                 "griffin_lim_iters")
        check(self.kernel_size % 2 == 1, "vocoder.kernel_size", "an odd number",
              self.kernel_size)
        check(self.mel_weight >= 0 and self.stft_weight >= 0, "vocoder.mel_weight",
              "non-negative loss weights", (self.mel_weight, self.stft_weight))
        check(len(self.stft_resolutions) > 0, "vocoder.stft_resolutions", "a non-empty list",
              self.stft_resolutions)

    @property
    def receptive_frames(self) -> int:
        """Frames on each side one output frame's spectrum depends on."""
        return (self.blocks + 1) * (self.kernel_size // 2)


@dataclasses.dataclass(frozen=True)
class SpeakerConfig:
    """Speaker encoder: ConvNeXt over log-mel -> mean/std pooling -> unit-norm embedding."""

    _prefix = "speaker"
    dim: int = 64
    mlp_ratio: int = 2
    blocks: int = 4
    kernel_size: int = 5
    dilations: tuple[int, ...] = (1, 2, 4)
    embed_dim: int = 64
    margin: float = 0.2  # additive cosine margin (CosFace / AM-softmax)
    scale: float = 20.0
    crop_frames: int = 120

    def __post_init__(self):
        positive(self, "dim", "mlp_ratio", "blocks", "kernel_size", "embed_dim", "scale",
                 "crop_frames")
        check(0 <= self.margin < 1, "speaker.margin", "a value in [0, 1)", self.margin)
        check(len(self.dilations) > 0 and min(self.dilations) >= 1, "speaker.dilations",
              "a non-empty list of ints >= 1", self.dilations)


@dataclasses.dataclass(frozen=True)
class StreamingConfig:
    """Chunked detokenization: chunks of codes, a code lookahead and a wave cross-fade."""

    _prefix = "streaming"
    chunk_codes: int = 8  # 320 ms of audio per chunk
    # Mel frames the vocoder sees left / right of the frames it emits; at or above
    # vocoder.receptive_frames + n_fft / (2 hop) the streamed wave equals the offline wave.
    vocoder_context_frames: int = 18
    vocoder_lookahead_frames: int = 18
    crossfade_samples: int = 160

    def __post_init__(self):
        positive(self, "chunk_codes")
        check(self.vocoder_context_frames >= 0, "streaming.vocoder_context_frames",
              "a number >= 0", self.vocoder_context_frames)
        check(self.vocoder_lookahead_frames >= 0, "streaming.vocoder_lookahead_frames",
              "a number >= 0", self.vocoder_lookahead_frames)
        check(self.crossfade_samples >= 0, "streaming.crossfade_samples", "a number >= 0",
              self.crossfade_samples)


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """The four networks and the streaming schedule (the sections of the codec settings)."""

    _prefix = "codec"
    mel: MelConfig = MelConfig()
    fsq: FSQConfig = FSQConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    flow: FlowConfig = FlowConfig()
    vocoder: VocoderConfig = VocoderConfig()
    speaker: SpeakerConfig = SpeakerConfig()
    streaming: StreamingConfig = StreamingConfig()

    def __post_init__(self):
        check(self.vocoder.n_fft % self.mel.hop_length == 0, "vocoder.n_fft",
              f"a multiple of mel.hop_length={self.mel.hop_length} (overlap-add by reshape)",
              self.vocoder.n_fft)
        check(self.streaming.crossfade_samples <= self.streaming.chunk_codes
              * self.mel.samples_per_code, "streaming.crossfade_samples",
              "at most one chunk of samples", self.streaming.crossfade_samples)
        check(self.vocoder.segment_frames > 2 * self.vocoder.receptive_frames,
              "vocoder.segment_frames",
              f"> twice the vocoder receptive field ({2 * self.vocoder.receptive_frames})",
              self.vocoder.segment_frames)

    @classmethod
    def from_experiment(cls, experiment: Mapping[str, Any]) -> CodecConfig:
        """The network sections of a codec run's `config.experiment` (other keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return dataclass_from_dict(cls, {k: v for k, v in experiment.items() if k in names},
                                   "experiment")
