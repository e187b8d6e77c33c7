"""Attention kernels behind two public entry points that pick an implementation per backend."""

from pallas_kernels.dispatch import attention, decode_attention, target_platform

__all__ = ["attention", "decode_attention", "target_platform"]
