"""Argument checks for the public entry points: errors name the field, expectation and value."""

from __future__ import annotations

import jax.numpy as jnp

FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def _fail(fn: str, field: str, expected: str, got) -> None:
    raise ValueError(f"{fn}: {field}: expected {expected}, got {got}")


def _check_float(fn: str, name: str, x) -> None:
    if jnp.dtype(x.dtype) not in [jnp.dtype(d) for d in FLOAT_DTYPES]:
        _fail(fn, f"{name}.dtype", "float32, bfloat16 or float16", x.dtype)


def check_options(fn: str, *, sliding_window, logit_soft_cap, scale, blocks: dict) -> None:
    if sliding_window is not None and (not isinstance(sliding_window, int)
                                       or isinstance(sliding_window, bool)
                                       or sliding_window < 1):
        _fail(fn, "sliding_window", "None or an int >= 1", repr(sliding_window))
    if logit_soft_cap is not None and not logit_soft_cap > 0:
        _fail(fn, "logit_soft_cap", "None or a number > 0", repr(logit_soft_cap))
    if scale is not None and not scale > 0:
        _fail(fn, "scale", "None or a number > 0", repr(scale))
    for name, value in blocks.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            _fail(fn, name, "an int >= 1", repr(value))


def check_attention_args(q, k, v, segment_ids) -> None:
    fn = "attention"
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            _fail(fn, f"{name}.shape", "[B, S, H, D]", x.shape)
        _check_float(fn, name, x)
    if k.shape != v.shape:
        _fail(fn, "v.shape", f"equal to k.shape {k.shape}", v.shape)
    if q.dtype != k.dtype or q.dtype != v.dtype:
        _fail(fn, "k/v dtype", f"equal to q.dtype {q.dtype}", (k.dtype, v.dtype))
    b, s, hq, d = q.shape
    if k.shape[0] != b or k.shape[1] != s or k.shape[3] != d:
        _fail(fn, "k.shape", f"[{b}, {s}, Hkv, {d}] (same batch, length and head dim as q)",
              k.shape)
    if hq % k.shape[2]:
        _fail(fn, "q heads", f"a multiple of the kv heads {k.shape[2]}", hq)
    if segment_ids is not None:
        if segment_ids.shape != (b, s):
            _fail(fn, "segment_ids.shape", f"[{b}, {s}]", segment_ids.shape)
        if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
            _fail(fn, "segment_ids.dtype", "an integer dtype", segment_ids.dtype)


def check_decode_args(q, k_cache, v_cache, lengths, max_window: int) -> None:
    fn = "decode_attention"
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if x.ndim != 4:
            _fail(fn, f"{name}.shape", "a rank-4 array", x.shape)
        _check_float(fn, name, x)
    b, w, hq, d = q.shape
    if not 1 <= w <= max_window:
        _fail(fn, "q.shape[1] (window)", f"1..{max_window}", w)
    if k_cache.shape != v_cache.shape:
        _fail(fn, "v_cache.shape", f"equal to k_cache.shape {k_cache.shape}", v_cache.shape)
    if k_cache.dtype != v_cache.dtype:
        _fail(fn, "v_cache.dtype", f"equal to k_cache.dtype {k_cache.dtype}", v_cache.dtype)
    if k_cache.shape[0] != b or k_cache.shape[3] != d:
        _fail(fn, "k_cache.shape", f"[{b}, T, Hkv, {d}]", k_cache.shape)
    if hq % k_cache.shape[2]:
        _fail(fn, "q heads", f"a multiple of the kv heads {k_cache.shape[2]}", hq)
    if lengths.shape != (b,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        _fail(fn, "lengths", f"an int array of shape [{b}]", (lengths.shape, lengths.dtype))
