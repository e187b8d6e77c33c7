"""Attention kernels behind two public entry points that pick an implementation per backend."""

from pallas_kernels.dispatch import (
    attention,
    current_platform,
    decode_attention,
    interpret_variant,
    target_platform,
)

__all__ = ["attention", "current_platform", "decode_attention", "interpret_variant",
           "target_platform"]
