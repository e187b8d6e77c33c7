"""Entry points: choose the kernel for the backend, or as forced by `impl`.

Initial dispatch: every impl routes to the XLA reference until the Pallas kernels land.
"""

from __future__ import annotations

import contextlib
import threading

import jax

from pallas_kernels.reference import attention_reference, decode_attention_reference

IMPLS = ("auto", "pallas", "pallas_interpret", "xla")
_state = threading.local()


@contextlib.contextmanager
def target_platform(platform: str):
    """Compile for `platform` ("tpu", "gpu", "cpu") instead of the default backend (AOT)."""
    prev = getattr(_state, "platform", None)
    _state.platform = platform
    try:
        yield
    finally:
        _state.platform = prev


def current_platform() -> str:
    return getattr(_state, "platform", None) or jax.default_backend()


def _check_impl(impl):
    if impl not in IMPLS:
        raise ValueError(f"attention impl: expected one of {IMPLS}, got {impl!r}")


def attention(q, k, v, *, segment_ids=None, causal=True, sliding_window=None,
              logit_soft_cap=None, scale=None, impl="auto", block_q=128, block_kv=128):
    _check_impl(impl)
    return attention_reference(q, k, v, segment_ids=segment_ids, causal=causal,
                               sliding_window=sliding_window, logit_soft_cap=logit_soft_cap,
                               scale=scale)


def decode_attention(q, k_cache, v_cache, lengths, *, sliding_window=None, logit_soft_cap=None,
                     scale=None, impl="auto", block_kv=128):
    _check_impl(impl)
    return decode_attention_reference(q, k_cache, v_cache, lengths,
                                      sliding_window=sliding_window,
                                      logit_soft_cap=logit_soft_cap, scale=scale)
