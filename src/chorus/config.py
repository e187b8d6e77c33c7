"""Typed, frozen, validated run configuration.

A run is fully described by one `Config`: nested frozen dataclasses, validated when built,
serializable to JSON and back, overridable from the command line with dotted keys
(`--set model.num_layers=4`). Presets are plain functions returning a `Config`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, expected and got."""


def _fail(field: str, expected: str, got: Any) -> typing.NoReturn:
    raise ConfigError(f"{field}: expected {expected}, got {got!r}")


# The validation and (de)serialization helpers below are shared by every config module
# (chorus.codec.config too): one wording of "field: expected ..., got ...".


def check(cond: bool, field: str, expected: str, got: Any) -> None:
    if not cond:
        _fail(field, expected, got)


def positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        check(value > 0, f"{obj._prefix}.{name}", "a positive number", value)


def _one_of(obj: Any, name: str, choices: Sequence[str]) -> None:
    value = getattr(obj, name)
    check(value in choices, f"{obj._prefix}.{name}", f"one of {list(choices)}", value)


DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("auto", "pallas", "pallas_interpret", "xla")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The decoder-only backbone over the unified vocabulary."""

    _prefix = "model"
    text_vocab_size: int = 512
    num_audio_codes: int = 1000
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    mlp_dim: int = 384
    max_seq_len: int = 1024
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    logit_soft_cap: float | None = None
    sliding_window: int | None = None
    scan_layers: bool = True
    remat_policy: str = "none"
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # master weights
    attention_impl: str = "auto"
    attention_block_q: int = 128
    attention_block_kv: int = 128

    def __post_init__(self):
        positive(self, "text_vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads",
                 "head_dim", "mlp_dim", "max_seq_len", "rope_theta", "attention_block_q",
                 "attention_block_kv")
        check(self.num_audio_codes >= 0, "model.num_audio_codes", "a number >= 0",
              self.num_audio_codes)
        check(self.num_heads % self.num_kv_heads == 0, "model.num_heads",
              f"a multiple of model.num_kv_heads={self.num_kv_heads}", self.num_heads)
        check(self.head_dim % 2 == 0, "model.head_dim", "an even number (RoPE rotates pairs)",
              self.head_dim)
        _one_of(self, "remat_policy", REMAT_POLICIES)
        _one_of(self, "dtype", DTYPES)
        _one_of(self, "param_dtype", DTYPES)
        _one_of(self, "attention_impl", ATTENTION_IMPLS)
        if self.logit_soft_cap is not None:
            check(self.logit_soft_cap > 0, "model.logit_soft_cap", "a positive number or None",
                  self.logit_soft_cap)
        if self.sliding_window is not None:
            check(self.sliding_window > 0, "model.sliding_window", "a positive number or None",
                  self.sliding_window)


@dataclasses.dataclass(frozen=True)
class AudioEncoderConfig:
    """log-mel (100 Hz) -> conv /4 (25 Hz) -> transformer -> adaptor /2 (12.5 Hz) -> d_model."""

    _prefix = "audio"
    n_mels: int = 128
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int = 384
    max_frames: int = 1500  # encoder frames (25 Hz) -> 60 s of audio
    # 0 = bidirectional; N > 0 = chunked-causal with chunks of N encoder frames (streaming).
    chunk_size: int = 0
    adaptor_dim: int = 256
    # Kernel of a Conformer convolution module after each block's attention (causal in a
    # chunked-causal encoder); 0 = none. cpu-tiny sets 15 (README, ASR recipe).
    conv_kernel: int = 0
    # Fixed affine input normalization (x - mel_mean) / mel_std: frame-local, so it keeps
    # streaming causal and padding-invariant. The defaults centre the natural-log mel of
    # chorus.audio.mel on speech at a typical level (measured: mean -8.3, std 4.1).
    mel_mean: float = -8.0
    mel_std: float = 4.0

    def __post_init__(self):
        positive(self, "n_mels", "d_model", "num_layers", "num_heads", "mlp_dim", "max_frames",
                 "adaptor_dim", "mel_std")
        check(self.d_model % self.num_heads == 0, "audio.d_model",
              f"a multiple of audio.num_heads={self.num_heads}", self.d_model)
        check(self.chunk_size >= 0, "audio.chunk_size", "0 (bidirectional) or a positive size",
              self.chunk_size)
        check(isinstance(self.conv_kernel, int) and self.conv_kernel >= 0, "audio.conv_kernel",
              "an int >= 0 (0 = no convolution module)", self.conv_kernel)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh (data, fsdp, tensor). One axis may be -1: it takes the remaining devices."""

    _prefix = "mesh"
    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    # Devices the preset is designed for (info / compile use it); 0 = whatever is present.
    target_devices: int = 0

    def __post_init__(self):
        check(self.target_devices >= 0, "mesh.target_devices", "a number >= 0",
              self.target_devices)
        sizes = (self.data, self.fsdp, self.tensor)
        for name, size in zip(("data", "fsdp", "tensor"), sizes, strict=True):
            check(size == -1 or size >= 1, f"mesh.{name}", "-1 or a positive size", size)
        check(sizes.count(-1) <= 1, "mesh", "at most one axis set to -1", sizes)

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            check(num_devices % known == 0, "mesh",
                  f"fixed axes whose product divides {num_devices} devices", sizes)
            sizes[sizes.index(-1)] = num_devices // known
        check(math.prod(sizes) == num_devices, "mesh",
              f"axis sizes whose product is the device count {num_devices}", sizes)
        return tuple(sizes)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warmup then cosine decay; global-norm clipping."""

    _prefix = "optim"
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    decay_steps: int = 0  # 0 = train.steps
    end_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    grad_accum_steps: int = 1

    def __post_init__(self):
        positive(self, "learning_rate", "eps", "grad_accum_steps")
        check(self.warmup_steps >= 0, "optim.warmup_steps", "a number >= 0", self.warmup_steps)
        check(self.decay_steps >= 0, "optim.decay_steps", "a number >= 0", self.decay_steps)
        check(0 <= self.end_lr_ratio <= 1, "optim.end_lr_ratio", "a ratio in [0, 1]",
              self.end_lr_ratio)
        check(0 <= self.b1 < 1, "optim.b1", "a value in [0, 1)", self.b1)
        check(0 <= self.b2 < 1, "optim.b2", "a value in [0, 1)", self.b2)
        check(self.weight_decay >= 0, "optim.weight_decay", "a number >= 0", self.weight_decay)
        check(self.clip_norm >= 0, "optim.clip_norm", "a number >= 0 (0 disables)",
              self.clip_norm)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    _prefix = "train"
    steps: int = 200
    batch_size: int = 8  # global, in sequences
    seq_len: int = 256
    max_audio_clips: int = 4  # audio clips per packed row
    max_mel_frames: int = 800  # log-mel frames per clip (100 Hz), a multiple of 8
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_steps: int = 4
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    max_nonfinite_in_a_row: int = 5
    # Trainer runtime (chorus.training; none of these change the math, so a run may resume
    # with other values).
    async_checkpointing: bool = True  # orbax writes in the background while training goes on
    prefetch_batches: int = 2  # host batches prepared ahead of the step (0 = inline)
    peak_flops_per_device: float = 0.0  # for MFU; 0 = look up by device kind (None on CPU)
    # Multi-host (jax.distributed). Empty / 0 / -1 fall back to the environment:
    # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (or cluster auto-detection).
    coordinator_address: str = ""  # "host:port" of process 0
    num_processes: int = 0
    process_id: int = -1

    def __post_init__(self):
        check(self.max_mel_frames % 8 == 0 and self.max_mel_frames > 0, "train.max_mel_frames",
              "a positive multiple of 8 (one <audio> placeholder per 8 mel frames)",
              self.max_mel_frames)
        positive(self, "steps", "batch_size", "seq_len", "max_audio_clips", "log_every",
                 "eval_every", "eval_steps", "checkpoint_every", "keep_checkpoints",
                 "max_nonfinite_in_a_row")
        check(self.prefetch_batches >= 0, "train.prefetch_batches", "a number >= 0",
              self.prefetch_batches)
        check(self.peak_flops_per_device >= 0, "train.peak_flops_per_device",
              "a number >= 0 (0 = by device kind)", self.peak_flops_per_device)
        check(self.num_processes >= 0, "train.num_processes", "a number >= 0 (0 = from env)",
              self.num_processes)
        check(self.process_id >= -1, "train.process_id", "a number >= -1 (-1 = from env)",
              self.process_id)
        if self.num_processes and self.process_id >= 0:
            check(self.process_id < self.num_processes, "train.process_id",
                  f"a number < train.num_processes={self.num_processes}", self.process_id)
        if self.coordinator_address:
            host, _, port = self.coordinator_address.rpartition(":")
            check(bool(host) and port.isdigit(), "train.coordinator_address",
                  "'host:port'", self.coordinator_address)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    _prefix = "decode"
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    num_draft_tokens: int = 4  # k of verified multi-token decoding
    # CTRL-style penalty on the logits of ids among the last `repetition_window` generated
    # tokens (positive / theta, negative * theta; see chorus.decoding.constraints). 1.0 = off.
    repetition_penalty: float = 1.0
    repetition_window: int = 0  # 0 = off
    # Beam search (chorus.decoding.beam): hypotheses kept per prompt (1 = greedy), and the
    # length normalization alpha of the ranking score logp / length**alpha (0 = off).
    beam_width: int = 1
    length_penalty: float = 0.0
    # Joint CTC/attention rescoring (ASR `--mode rescore`): the decoder's greedy transcript and
    # the CTC prefix beam's `rescore_beam` best, ranked by
    # rescore_weight * log p_ctc + (1 - rescore_weight) * log p_dec. 0.6: the best of 0..1 in
    # steps of 0.1 on the validation split of the cpu-tiny reproduce model (README).
    rescore_weight: float = 0.6
    rescore_beam: int = 8
    # Joint CTC/attention decoding (ASR `--mode joint`, chorus.decoding.joint): each step's
    # `joint_candidates` most probable decoder ids and the clip's `joint_ctc_candidates` ids
    # the CTC head fires most confidently, ranked by
    # (1 - joint_weight) * log p_dec + joint_weight * log psi_ctc(prefix). 0.7: the best of
    # 0.3 / 0.5 / 0.6 / 0.7 / 0.8 / 0.9 on the validation split of the reproduce model (README).
    joint_weight: float = 0.7
    joint_candidates: int = 8
    joint_ctc_candidates: int = 16

    def __post_init__(self):
        positive(self, "max_new_tokens", "repetition_penalty")
        check(0 <= self.rescore_weight <= 1, "decode.rescore_weight", "a value in [0, 1]",
              self.rescore_weight)
        check(0 <= self.joint_weight <= 1, "decode.joint_weight", "a value in [0, 1]",
              self.joint_weight)
        check(isinstance(self.joint_candidates, int) and self.joint_candidates >= 1,
              "decode.joint_candidates", "an int >= 1", self.joint_candidates)
        check(isinstance(self.joint_ctc_candidates, int) and self.joint_ctc_candidates >= 0,
              "decode.joint_ctc_candidates", "an int >= 0", self.joint_ctc_candidates)
        check(isinstance(self.rescore_beam, int) and self.rescore_beam >= 1,
              "decode.rescore_beam", "an int >= 1", self.rescore_beam)
        check(isinstance(self.beam_width, int) and self.beam_width >= 1, "decode.beam_width",
              "an int >= 1", self.beam_width)
        check(self.length_penalty >= 0, "decode.length_penalty", "a number >= 0",
              self.length_penalty)
        check(self.temperature >= 0, "decode.temperature", "a number >= 0", self.temperature)
        check(self.top_k >= 0, "decode.top_k", "a number >= 0", self.top_k)
        check(0 < self.top_p <= 1, "decode.top_p", "a value in (0, 1]", self.top_p)
        check(0 <= self.num_draft_tokens <= 15, "decode.num_draft_tokens",
              "0..15 (the verify window is at most 16)", self.num_draft_tokens)
        check(self.repetition_window >= 0, "decode.repetition_window", "a number >= 0",
              self.repetition_window)
        check(self.repetition_penalty == 1.0 or self.repetition_window > 0,
              "decode.repetition_window",
              f"> 0 when decode.repetition_penalty={self.repetition_penalty} (the penalty "
              f"applies to the ids of the last repetition_window tokens)",
              self.repetition_window)


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run. `experiment` holds per-mode extras as plain JSON values."""

    _prefix = ""
    name: str = "cpu-tiny"
    model: ModelConfig = ModelConfig()
    audio: AudioEncoderConfig = AudioEncoderConfig()
    mesh: MeshConfig = MeshConfig()
    optim: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    decode: DecodeConfig = DecodeConfig()
    experiment: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for key, value in self.experiment.items():
            check(isinstance(key, str), "experiment", "string keys", key)
            try:
                json.dumps(value)
            except TypeError:
                _fail(f"experiment.{key}", "a JSON value", value)
        # Freeze the mapping so the config stays immutable.
        object.__setattr__(self, "experiment", types.MappingProxyType(dict(self.experiment)))

    def __hash__(self) -> int:  # the experiment mapping is not hashable; its JSON is
        return hash(self.to_json())

    def to_dict(self) -> dict[str, Any]:
        return dataclass_to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        return dataclass_from_dict(cls, data, prefix="")

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))


def dataclass_to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: dataclass_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: dataclass_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return list(obj)
    return obj


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(value: Any, tp: Any, field: str, default: Any = dataclasses.MISSING) -> Any:
    """Checks `value` against the annotation `tp`, allowing int -> float and list -> tuple.

    A mapping given for a dataclass-typed field is merged over the field's `default` when that
    is a dataclass instance, so `--set experiment.mtp.num_heads=2` keeps the other MTP fields
    of the default (not of the class)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        candidates = [arg for arg in args if arg is not type(None)]
        if len(candidates) == 1:  # Optional[X]: X's own error names the nested field
            return _coerce(value, candidates[0], field, default)
        for arg in candidates:
            try:
                return _coerce(value, arg, field, default)
            except ConfigError:
                continue
        _fail(field, f"a value of type {tp}", value)
    if tp is Any:
        return value
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        check(value in choices, field, f"one of {list(choices)}", value)
        return value
    if tp is bool:
        check(isinstance(value, bool), field, "a bool", value)
        return value
    if tp is int:
        check(isinstance(value, int) and not isinstance(value, bool), field, "an int", value)
        return value
    if tp is float:
        check(isinstance(value, int | float) and not isinstance(value, bool), field, "a number",
              value)
        return float(value)
    if tp is str:
        check(isinstance(value, str), field, "a string", value)
        return value
    if origin is tuple:
        check(isinstance(value, list | tuple), field, "a list", value)
        (elem,) = typing.get_args(tp)[:1]
        return tuple(_coerce(v, elem, f"{field}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp in (dict, Mapping):
        check(isinstance(value, Mapping), field, "a mapping", value)
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        check(isinstance(value, Mapping), field, "a mapping", value)
        if isinstance(default, tp):
            value = _deep_merge(dataclass_to_dict(default), value)
        return dataclass_from_dict(tp, value, prefix=field)
    return value


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def dataclass_from_dict(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    """Builds (and so validates) `cls` from plain JSON-like data: every value is coerced to its
    field's annotation, unknown keys fail naming the field, missing keys take the defaults,
    and partial mappings for nested dataclass fields merge over the field's default."""
    if not isinstance(data, Mapping):
        _fail(prefix or "config", "a mapping", data)
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix or "config"
        raise ConfigError(f"{where}: unknown field(s) {unknown}; expected some of "
                          f"{sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        field = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], field, _default_of(fields[name]))
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without a value
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


# Keys under `experiment` that the commands record for themselves (not a mode's settings).
RESERVED_EXPERIMENT_KEYS = ("module", "stage", "run_dir")


def settings_from(cls: type, experiment: Mapping[str, Any], prefix: str = "experiment") -> Any:
    """A mode's typed settings from `config.experiment` (the commands' own keys left out).

    The one way an experiment reads its settings: `--set experiment.<field>=...` values are
    coerced and validated by `cls`, an unknown key fails naming it and the known fields."""
    data = {k: v for k, v in experiment.items() if k not in RESERVED_EXPERIMENT_KEYS}
    return dataclass_from_dict(cls, data, prefix=prefix)


# ----------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """`model.num_layers=4` -> ("model.num_layers", 4). Values are YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. model.num_layers=4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: could not parse value {raw!r}: {e}") from None
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def apply_overrides(config: Config, overrides: Sequence[str] | Mapping[str, Any]) -> Config:
    """Returns `config` with dotted overrides applied and re-validated."""
    items = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    data = config.to_dict()
    for key, value in items:
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if parts[0] == "experiment" and depth > 0:  # free-form extras: nest as needed
                node = node.setdefault(part, {})
                continue
            if part not in node or not isinstance(node[part], dict):
                known = sorted(k for k, v in node.items() if isinstance(v, dict))
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {key}: no config section {where!r}; sections: {known}")
            node = node[part]
        leaf = parts[-1]
        if parts[0] != "experiment" and leaf not in node:
            raise ConfigError(f"--set {key}: unknown field {leaf!r}; expected one of "
                              f"{sorted(node)}")
        node[leaf] = value
    return Config.from_dict(data)


# ----------------------------------------------------------------------------- presets


def cpu_tiny() -> Config:
    """Trains in minutes on 2 CPU cores."""
    # Synthetic clips are 1.5-5.6 s: 560 mel frames per clip slot keeps padding small.
    # A convolution module in each encoder block: the audio encoder learns local acoustics
    # far faster with it at this budget (README, ASR recipe).
    return Config(name="cpu-tiny", audio=AudioEncoderConfig(conv_kernel=15),
                  train=TrainConfig(max_mel_frames=560))


def gpu_1b() -> Config:
    """A ~1B decoder for a single 80 GB GPU (bf16 compute, fp32 master weights)."""
    return Config(
        name="gpu-1b",
        model=ModelConfig(text_vocab_size=32_000, num_audio_codes=6561, d_model=2048,
                          num_layers=16, num_heads=16, num_kv_heads=8, head_dim=128,
                          mlp_dim=5632, max_seq_len=4096, remat_policy="dots",
                          dtype="bfloat16", tie_embeddings=False),
        audio=AudioEncoderConfig(d_model=768, num_layers=12, num_heads=12, mlp_dim=3072,
                                 adaptor_dim=2048),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1, target_devices=1),
        optim=OptimizerConfig(learning_rate=3e-4, warmup_steps=2000, weight_decay=0.1),
        train=TrainConfig(steps=100_000, batch_size=32, seq_len=4096, max_audio_clips=2,
                          max_mel_frames=3000, log_every=50,
                          eval_every=2000, checkpoint_every=1000),
    )


def tpu_v5p_64_7b() -> Config:
    """Step-Audio-2-shaped 7B decoder (Qwen2.5-7B layout) + Whisper-large-sized encoder."""
    return Config(
        name="tpu-v5p-64-7b",
        model=ModelConfig(text_vocab_size=151_643, num_audio_codes=6561, d_model=3584,
                          num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                          mlp_dim=18_944, max_seq_len=8192, rope_theta=1_000_000.0,
                          remat_policy="full", dtype="bfloat16", tie_embeddings=False,
                          attention_block_q=512, attention_block_kv=512),
        audio=AudioEncoderConfig(d_model=1280, num_layers=32, num_heads=20, mlp_dim=5120,
                                 adaptor_dim=2048),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=4, target_devices=64),
        optim=OptimizerConfig(learning_rate=2e-5, warmup_steps=1000, weight_decay=0.1),
        train=TrainConfig(steps=200_000, batch_size=64, seq_len=4096, max_audio_clips=2,
                          max_mel_frames=3000, log_every=50,
                          eval_every=2000, checkpoint_every=1000),
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "cpu-tiny": cpu_tiny,
    "gpu-1b": gpu_1b,
    "tpu-v5p-64-7b": tpu_v5p_64_7b,
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"--preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]()


def load_config(preset: str, overrides: Sequence[str] = ()) -> Config:
    return apply_overrides(get_preset(preset), overrides)


# ----------------------------------------------------------------------------- command line


def add_config_args(parser, default_preset: str = "cpu-tiny") -> None:
    """--preset NAME and repeated --set KEY=VALUE on an argparse parser (every command)."""
    parser.add_argument("--preset", default=default_preset, choices=sorted(PRESETS))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="dotted override, e.g. model.num_layers=4")


def config_from_args(args) -> Config:
    return load_config(args.preset, args.overrides)
