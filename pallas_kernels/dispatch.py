"""Entry points: choose the kernel for the platform, or as forced by `impl`.

impl:
  auto              TPU -> Mosaic kernel; GPU -> cuDNN flash attention when it supports the
                    call (fp16/bf16, no segment ids, no soft-cap), else the Triton kernel;
                    CPU -> the XLA reference.
  pallas            the Pallas kernel of the current platform (TPU or GPU; error on CPU).
  pallas_interpret  a Pallas kernel run by the interpreter (any backend, for tests). The
                    variant is `interpret_variant(...)` if set, else the target platform when
                    that is tpu/gpu, else DEFAULT_INTERPRET_VARIANT.
  xla               the pure-JAX reference.
The platform is `current_platform()`: the `target_platform` override (for AOT compiles on a
machine without that accelerator), else `jax.default_backend()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import jax
import jax.numpy as jnp

from pallas_kernels import checks, decode, flash, sharding
from pallas_kernels.reference import attention_reference, decode_attention_reference

IMPLS = ("auto", "pallas", "pallas_interpret", "xla")
PLATFORMS = ("cpu", "gpu", "tpu")
DEFAULT_INTERPRET_VARIANT = "tpu"
GPU_AUTO_PREFERS_CUDNN = True  # cuDNN's fused flash kernel is the faster GPU path when usable
_state = threading.local()


@contextlib.contextmanager
def target_platform(platform: str):
    """Compile for `platform` ("tpu", "gpu", "cpu") instead of the default backend (AOT)."""
    if platform not in PLATFORMS:
        raise ValueError(f"target_platform: platform: expected one of {PLATFORMS}, "
                         f"got {platform!r}")
    prev = getattr(_state, "platform", None)
    _state.platform = platform
    try:
        yield
    finally:
        _state.platform = prev


@contextlib.contextmanager
def interpret_variant(variant: str):
    """Pick which kernel (tpu | gpu) impl="pallas_interpret" runs."""
    if variant not in ("tpu", "gpu"):
        raise ValueError(f"interpret_variant: variant: expected 'tpu' or 'gpu', got {variant!r}")
    prev = getattr(_state, "variant", None)
    _state.variant = variant
    try:
        yield
    finally:
        _state.variant = prev


def current_platform() -> str:
    platform = getattr(_state, "platform", None) or jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


@dataclasses.dataclass(frozen=True)
class Route:
    """What a call resolves to: kind in {xla, cudnn, pallas}; variant/interpret for pallas."""

    kind: str
    variant: str | None = None
    interpret: bool = False


def _interpret_route() -> Route:
    variant = getattr(_state, "variant", None)
    if variant is None:
        platform = current_platform()
        variant = platform if platform in ("tpu", "gpu") else DEFAULT_INTERPRET_VARIANT
    return Route("pallas", variant, interpret=True)


def cudnn_supports(q, segment_ids, *, causal, sliding_window, logit_soft_cap) -> bool:
    """Whether jax.nn.dot_product_attention(implementation='cudnn') can run this call."""
    return (jnp.dtype(q.dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
            and segment_ids is None and logit_soft_cap is None
            and q.shape[-1] <= 128 and q.shape[-1] % 8 == 0
            and (sliding_window is None or causal))


def resolve(impl: str, *, cudnn_ok: bool = False) -> Route:
    if impl not in IMPLS:
        raise ValueError(f"attention impl: expected one of {IMPLS}, got {impl!r}")
    platform = current_platform()
    if impl == "xla":
        return Route("xla")
    if impl == "pallas_interpret":
        return _interpret_route()
    if impl == "pallas":
        if platform not in ("tpu", "gpu"):
            raise ValueError(f"attention impl='pallas': expected a TPU or GPU platform, got "
                             f"{platform!r} (use impl='pallas_interpret' on CPU)")
        return Route("pallas", platform)
    if platform == "tpu":
        return Route("pallas", "tpu")
    if platform == "gpu":
        return Route("cudnn") if cudnn_ok and GPU_AUTO_PREFERS_CUDNN else Route("pallas", "gpu")
    return Route("xla")


def attention(q, k, v, *, segment_ids=None, causal=True, sliding_window=None,
              logit_soft_cap=None, scale=None, impl="auto", block_q=128, block_kv=128,
              chunk_size=None):
    """Multi-head attention: q [B,S,Hq,D], k/v [B,S,Hkv,D], segment_ids [B,S] -> [B,S,Hq,D].

    chunk_size (chunked-causal streaming encoders, with causal=False) always takes the XLA
    path: the flash kernels implement causal / segment / window masks only.
    """
    if chunk_size is not None:
        if causal or chunk_size < 1:
            raise ValueError(f"attention: chunk_size: expected a positive size with "
                             f"causal=False, got chunk_size={chunk_size}, causal={causal}")
        impl = "xla"
    checks.check_attention_args(q, k, v, segment_ids)
    checks.check_options("attention", sliding_window=sliding_window,
                         logit_soft_cap=logit_soft_cap, scale=scale,
                         blocks=dict(block_q=block_q, block_kv=block_kv))
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    route = resolve(impl, cudnn_ok=cudnn_supports(q, segment_ids, causal=causal,
                                                  sliding_window=sliding_window,
                                                  logit_soft_cap=logit_soft_cap))
    if route.kind == "xla":
        return attention_reference(q, k, v, segment_ids=segment_ids, causal=causal,
                                   sliding_window=sliding_window,
                                   logit_soft_cap=logit_soft_cap, scale=scale,
                                   chunk_size=chunk_size)
    if route.kind == "cudnn":
        window = None if sliding_window is None else (sliding_window - 1, 0)
        return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal,
                                            local_window_size=window, implementation="cudnn")

    def per_shard(q, k, v, segment_ids):
        p = flash.plan(q.shape, variant=route.variant, interpret=route.interpret,
                       causal=causal, sliding_window=sliding_window,
                       logit_soft_cap=logit_soft_cap, scale=scale, block_q=block_q,
                       block_kv=block_kv, num_groups=q.shape[2] // k.shape[2],
                       has_segments=segment_ids is not None)
        return flash.flash_attention(q, k, v, segment_ids, p)

    return sharding.shard_attention(per_shard, q, k, v, segment_ids)


def decode_attention(q, k_cache, v_cache, lengths, *, sliding_window=None, logit_soft_cap=None,
                     scale=None, impl="auto", block_kv=128):
    """W new queries per row against a KV cache: q [B,W,Hq,D], caches [B,T,Hkv,D], lengths [B].

    lengths count valid cache rows including the W new tokens; query i of row b sits at
    position lengths[b] - W + i and sees cache rows <= it. The XLA route takes any W; the
    kernel routes answer a window wider than the kernels' MAX_WINDOW (a long extend of the
    cache) in slices of MAX_WINDOW queries.
    """
    route = resolve(impl)  # cuDNN has no ragged multi-query decode; never chosen here
    w = q.shape[1] if q.ndim == 4 else 0
    if route.kind != "xla" and w > decode.MAX_WINDOW:
        opts = dict(sliding_window=sliding_window, logit_soft_cap=logit_soft_cap, scale=scale,
                    impl=impl, block_kv=block_kv)
        # Slice [start, stop) ends at row lengths - (w - stop): its queries keep their positions.
        return jnp.concatenate([
            decode_attention(q[:, start:start + decode.MAX_WINDOW], k_cache, v_cache,
                             lengths - (w - min(start + decode.MAX_WINDOW, w)), **opts)
            for start in range(0, w, decode.MAX_WINDOW)], axis=1)
    max_window = decode.MAX_WINDOW if route.kind != "xla" else max(w, decode.MAX_WINDOW)
    checks.check_decode_args(q, k_cache, v_cache, lengths, max_window)
    checks.check_options("decode_attention", sliding_window=sliding_window,
                         logit_soft_cap=logit_soft_cap, scale=scale,
                         blocks=dict(block_kv=block_kv))
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if route.kind == "xla":
        return decode_attention_reference(q, k_cache, v_cache, lengths,
                                          sliding_window=sliding_window,
                                          logit_soft_cap=logit_soft_cap, scale=scale)

    def per_shard(q, k_cache, v_cache, lengths):
        p = decode.plan(q.shape, k_cache.shape[1], k_cache.shape[2], variant=route.variant,
                        interpret=route.interpret, sliding_window=sliding_window,
                        logit_soft_cap=logit_soft_cap, scale=scale, block_kv=block_kv)
        return decode.decode_attention_pallas(q, k_cache, v_cache, lengths.astype(jnp.int32), p)

    return sharding.shard_decode(per_shard, q, k_cache, v_cache, lengths)
