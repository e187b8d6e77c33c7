"""Codec configuration: frozen, validated dataclasses and presets.

One `CodecConfig` describes the speech tokenizer (log-mel -> FSQ codes @25 Hz), the
flow-matching detokenizer, the vocoder, the speaker encoder, the training corpus and the
streaming schedule. It is written into the workdir as `codec_config.json` and is enough to
rebuild every model there. Codec preset names mirror the backbone presets so that
`fsq.num_codes` equals the backbone's `model.num_audio_codes` for the same name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chorus.config import (
    ConfigError,
    check,
    dataclass_from_dict,
    dataclass_to_dict,
    parse_override,
    positive,
)
from chorus.vocab import CODEC_FRAMES_PER_SECOND, MEL_FRAMES_PER_SECOND


def _in_unit(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        check(0 <= value < 1, f"{obj._prefix}.{name}", "a value in [0, 1)", value)


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """The codec's log-mel is the project's one feature definition (`data_pipelines.mel`:
    16 kHz, 25 ms Hann, 10 ms hop, 128 Slaney mels, natural log of mel *power*); these fields
    restate it so a config file says what its models were trained on."""

    _prefix = "mel"
    sample_rate: int = 16_000
    hop_length: int = 160  # 100 Hz at 16 kHz
    n_mels: int = 128

    def __post_init__(self):
        from chorus.audio import mel as features  # numpy only: cheap to import

        for name, value in (("sample_rate", features.SAMPLE_RATE),
                            ("hop_length", features.HOP_LENGTH), ("n_mels", features.N_MELS)):
            check(getattr(self, name) == value, f"mel.{name}",
                  f"{value} (the data_pipelines.mel feature definition)", getattr(self, name))
        check(self.sample_rate == self.hop_length * MEL_FRAMES_PER_SECOND, "mel.hop_length",
              f"sample_rate / {MEL_FRAMES_PER_SECOND}", self.hop_length)

    @property
    def frames_per_code(self) -> int:
        return MEL_FRAMES_PER_SECOND // CODEC_FRAMES_PER_SECOND

    @property
    def samples_per_code(self) -> int:
        return self.hop_length * self.frames_per_code


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
class StageTrainConfig:
    """Optimization of one codec model (each model has its own small optax loop)."""

    _prefix = "train"
    steps: int = 600
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    end_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    log_every: int = 50
    checkpoint_every: int = 200

    def __post_init__(self):
        positive(self, "steps", "batch_size", "learning_rate", "log_every", "checkpoint_every")
        check(self.warmup_steps >= 0, "train.warmup_steps", "a number >= 0", self.warmup_steps)
        check(0 <= self.end_lr_ratio <= 1, "train.end_lr_ratio", "a ratio in [0, 1]",
              self.end_lr_ratio)
        check(self.weight_decay >= 0, "train.weight_decay", "a number >= 0", self.weight_decay)
        check(self.clip_norm >= 0, "train.clip_norm", "a number >= 0 (0 disables)",
              self.clip_norm)


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
    train: StageTrainConfig = StageTrainConfig(steps=800, learning_rate=2e-3)

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
    train: StageTrainConfig = StageTrainConfig(steps=1000, learning_rate=2e-3)

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
    def cond_context_codes(self) -> int:
        return self.lookahead_codes

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
    train: StageTrainConfig = StageTrainConfig(steps=1000, learning_rate=2e-3, batch_size=16)

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
    train: StageTrainConfig = StageTrainConfig(steps=250, learning_rate=2e-3, batch_size=32)

    def __post_init__(self):
        positive(self, "dim", "mlp_ratio", "blocks", "kernel_size", "embed_dim", "scale",
                 "crop_frames")
        check(0 <= self.margin < 1, "speaker.margin", "a value in [0, 1)", self.margin)
        check(len(self.dilations) > 0 and min(self.dilations) >= 1, "speaker.dilations",
              "a non-empty list of ints >= 1", self.dilations)


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """The synthetic eSpeak NG corpus: voices are speakers; sentences are split train / eval."""

    _prefix = "corpus"
    # Names from data_pipelines.voices (eSpeak accent + variant).
    voices: tuple[str, ...] = ("en-gb+m1", "en-gb+m2", "en-gb+m3", "en-gb+m4", "en-gb+m5",
                               "en-gb+m6", "en-gb+m7", "en-gb+f1", "en-gb+f2", "en-gb+f3",
                               "en-gb+f4", "en-gb+f5")
    heldout_voices: tuple[str, ...] = ("en-gb+croak", "en-gb+klatt", "en-gb+Annie")  # unseen
    train_utterances_per_voice: int = 60
    eval_sentences: int = 8  # held-out sentences, spoken by every voice
    min_words: int = 3
    max_words: int = 8
    rate_wpm: tuple[int, ...] = (150, 180)  # speaking rate range (inclusive)
    seed: int = 0

    def __post_init__(self):
        from data_pipelines.voices import VOICES  # the synthesis catalog (plain data)

        check(len(self.voices) >= 2, "corpus.voices", "at least two voices", self.voices)
        known = {v.name for v in VOICES}
        for field in ("voices", "heldout_voices"):
            for i, name in enumerate(getattr(self, field)):
                check(name in known, f"corpus.{field}[{i}]",
                      "a data_pipelines.voices name such as 'en-gb+f3'", name)
        check(len(set(self.voices) | set(self.heldout_voices))
              == len(self.voices) + len(self.heldout_voices), "corpus.heldout_voices",
              "voices distinct from corpus.voices", self.heldout_voices)
        positive(self, "train_utterances_per_voice", "eval_sentences", "min_words")
        check(self.max_words >= self.min_words, "corpus.max_words",
              f">= corpus.min_words={self.min_words}", self.max_words)
        check(len(self.rate_wpm) == 2 and 80 <= self.rate_wpm[0] <= self.rate_wpm[1] <= 450,
              "corpus.rate_wpm", "[low, high] words per minute within 80..450", self.rate_wpm)


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
    _prefix = "codec"
    name: str = "cpu-tiny"
    seed: int = 0
    mel: MelConfig = MelConfig()
    fsq: FSQConfig = FSQConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    flow: FlowConfig = FlowConfig()
    vocoder: VocoderConfig = VocoderConfig()
    speaker: SpeakerConfig = SpeakerConfig()
    corpus: CorpusConfig = CorpusConfig()
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

    def to_dict(self) -> dict[str, Any]:
        return dataclass_to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodecConfig:
        return dataclass_from_dict(cls, data, prefix="codec")

    @classmethod
    def from_json(cls, text: str) -> CodecConfig:
        return cls.from_dict(json.loads(text))


def apply_overrides(config: CodecConfig, overrides: Sequence[str]) -> CodecConfig:
    """`flow.train.steps=100` style dotted overrides, re-validated."""
    data = config.to_dict()
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {key}: no config section {where!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"--set {key}: unknown field {parts[-1]!r}; expected one of "
                              f"{sorted(node)}")
        node[parts[-1]] = value
    return CodecConfig.from_dict(data)


# ----------------------------------------------------------------------------- presets


def cpu_tiny() -> CodecConfig:
    """Trains end to end in about 10 minutes on 2 CPU cores; 1000 codes like the cpu-tiny LM."""
    return CodecConfig(name="cpu-tiny")


_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
_VARIANTS = ("", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7")
_BIG_VOICES = tuple(f"{a}+{v}" if v else a for a in _ACCENTS for v in _VARIANTS)  # 78
_BIG_HELDOUT_VOICES = ("en-gb-x-gbclan+f2", "en-gb-x-gbcwmd+m3", "en-gb+croak", "en-us+Andy",
                       "en-gb+belinda")


def _big(name: str, dim: int) -> CodecConfig:
    long = StageTrainConfig(steps=200_000, batch_size=64, learning_rate=5e-4, warmup_steps=2000,
                            log_every=100, checkpoint_every=5000)
    return CodecConfig(
        name=name,
        fsq=FSQConfig(levels=(3,) * 8),  # 6561 codes, as CosyVoice 2 / Step-Audio 2
        tokenizer=TokenizerConfig(dim=dim, mlp_ratio=4, encoder_blocks=12, decoder_blocks=4,
                                  dilations=(1, 2, 4), max_frames=1600, train=long),
        flow=FlowConfig(dim=dim, mlp_ratio=4, cond_blocks=4, dilations=(1, 2, 4, 8) * 3,
                        crop_frames=400, cond_dropout=0.2, guidance=0.7, train=long),
        vocoder=VocoderConfig(dim=dim, mlp_ratio=3, blocks=8, segment_frames=96, train=long),
        speaker=SpeakerConfig(dim=dim // 2, mlp_ratio=3, blocks=8, embed_dim=192,
                              crop_frames=300, train=long),
        corpus=CorpusConfig(voices=_BIG_VOICES, heldout_voices=_BIG_HELDOUT_VOICES,
                            train_utterances_per_voice=1000, eval_sentences=50, max_words=20),
    )


def gpu_1b() -> CodecConfig:
    return _big("gpu-1b", 512)


def tpu_v5p_64_7b() -> CodecConfig:
    return _big("tpu-v5p-64-7b", 768)


PRESETS: dict[str, Callable[[], CodecConfig]] = {
    "cpu-tiny": cpu_tiny,
    "gpu-1b": gpu_1b,
    "tpu-v5p-64-7b": tpu_v5p_64_7b,
}


def get_preset(name: str) -> CodecConfig:
    if name not in PRESETS:
        raise ConfigError(f"--preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]()
