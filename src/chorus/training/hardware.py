"""Peak FLOP/s per device, for model FLOPs utilization (MFU).

Dense bf16 peaks from the vendors' spec sheets (no sparsity). MFU against the bf16 peak is
the usual convention; a float32 run on the same chip reads lower.
"""

from __future__ import annotations

# Matched against `jax.Device.device_kind` by longest prefix.
PEAK_BF16_FLOPS: dict[str, float] = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA A100": 312e12,
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA GH200": 989e12,
    "NVIDIA B200": 2250e12,
}


def peak_flops_per_device(device_kind: str, override: float = 0.0) -> float | None:
    """The override when > 0, else the table entry for `device_kind`; None when unknown (CPU)."""
    if override > 0:
        return float(override)
    matches = [k for k in PEAK_BF16_FLOPS if device_kind.startswith(k)]
    return PEAK_BF16_FLOPS[max(matches, key=len)] if matches else None


def mfu(flops_per_step: float | None, step_seconds: float, num_devices: int,
        peak_per_device: float | None) -> float | None:
    if not flops_per_step or not peak_per_device or step_seconds <= 0:
        return None
    return flops_per_step / step_seconds / (num_devices * peak_per_device)
