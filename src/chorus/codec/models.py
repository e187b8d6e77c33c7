"""The four codec networks built from one CodecConfig, and their parameter initialization."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from chorus.codec.config import CodecConfig
from chorus.codec.flow import FlowDecoder
from chorus.codec.speaker import SpeakerEncoder
from chorus.codec.tokenizer import SemanticTokenizer
from chorus.codec.vocoder import Vocoder

# The networks, in their training order (each is one stage of experiments/codec).
NETWORKS = ("speaker", "tokenizer", "flow", "vocoder")


@dataclasses.dataclass(frozen=True)
class CodecModels:
    speaker: SpeakerEncoder
    tokenizer: SemanticTokenizer
    flow: FlowDecoder
    vocoder: Vocoder

    @classmethod
    def build(cls, cfg: CodecConfig) -> CodecModels:
        n_mels = cfg.mel.n_mels
        return cls(speaker=SpeakerEncoder(cfg.speaker),
                   tokenizer=SemanticTokenizer(cfg.tokenizer, cfg.fsq, n_mels),
                   flow=FlowDecoder(cfg.flow, cfg.fsq, n_mels),
                   vocoder=Vocoder(cfg.vocoder, cfg.mel.hop_length))


def init_params(models: CodecModels, cfg: CodecConfig, name: str, key: jax.Array):
    """Fresh params of one network (shapes do not depend on sequence length)."""
    n_mels, frames = cfg.mel.n_mels, 8
    mel = jnp.zeros((1, frames, n_mels))
    mask = jnp.ones((1, frames))
    if name == "speaker":
        return models.speaker.init(key, mel, mask)["params"]
    if name == "tokenizer":
        return models.tokenizer.init(key, mel, mask)["params"]
    if name == "flow":
        codes = jnp.zeros((1, frames // 4), jnp.int32)
        spk = jnp.zeros((1, cfg.speaker.embed_dim))
        return models.flow.init(key, mel, codes, jnp.ones((1, frames // 4)), spk,
                                jnp.zeros((1,)), mask)["params"]
    if name == "vocoder":
        return models.vocoder.init(key, mel, mask)["params"]
    raise ValueError(f"init_params name: expected one of {list(NETWORKS)}, got {name!r}")
