"""Decode attention (W queries vs a ragged KV cache), both Pallas variants in interpret mode,
vs the pure-JAX reference in fp32."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

import pallas_kernels
from pallas_kernels import decode
from pallas_kernels.reference import decode_attention_reference
from pallas_kernels.testing import random_cache, relative_error


@dataclasses.dataclass(frozen=True)
class Case:
    window: int
    q_heads: int
    kv_heads: int
    cache_len: int
    lengths: tuple[int, ...]
    head_dim: int = 32
    sliding_window: int | None = None
    soft_cap: float | None = None
    block_kv: int = 16

    def __str__(self):
        parts = [f"W{self.window}", f"G{self.q_heads // self.kv_heads}", f"T{self.cache_len}",
                 f"D{self.head_dim}", "L" + "_".join(map(str, self.lengths))]
        parts += [f"win{self.sliding_window}"] * (self.sliding_window is not None)
        parts += [f"cap{self.soft_cap}"] * (self.soft_cap is not None)
        return "-".join(parts)


CASES = [
    # single-token decode; T not a block multiple; a row with only its own token
    Case(1, 4, 2, 100, (1, 50, 100)),
    # verify window of 4, GQA 4, sliding window and soft cap
    Case(4, 4, 1, 77, (4, 77), sliding_window=9, soft_cap=5.0),
    # the widest window; GPU splits the cache into 3 chunks that are merged afterwards
    Case(16, 2, 2, 200, (16, 150), sliding_window=20),
    # D = 128: TPU reads the cache in place as [B, T, Hkv*D]
    Case(5, 8, 2, 300, (299,), head_dim=128, block_kv=32),
    # wider than MAX_WINDOW: the kernel answers 16-query slices, the reference the whole window
    Case(40, 2, 2, 120, (40, 97), sliding_window=20),
]


def _inputs(case: Case, dtype=jnp.float32):
    q, k, v = random_cache(case.cache_len, len(case.lengths), case.window,
                           case.q_heads, case.kv_heads, case.head_dim, case.cache_len, dtype)
    return q, k, v, jnp.array(case.lengths, jnp.int32)


def _kernel(case: Case, variant: str):
    @jax.jit
    def run(q, k, v, lengths):
        with pallas_kernels.interpret_variant(variant):
            return pallas_kernels.decode_attention(
                q, k, v, lengths, sliding_window=case.sliding_window,
                logit_soft_cap=case.soft_cap, impl="pallas_interpret", block_kv=case.block_kv)
    return run


def _reference(case: Case, q, k, v, lengths):
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    return decode_attention_reference(*f32, lengths, sliding_window=case.sliding_window,
                                      logit_soft_cap=case.soft_cap)


@pytest.mark.parametrize("variant", ["tpu", "gpu"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_decode_matches_reference_fp32(case, variant):
    q, k, v, lengths = _inputs(case)
    got = _kernel(case, variant)(q, k, v, lengths)
    assert got.shape == q.shape and got.dtype == q.dtype
    assert relative_error(got, _reference(case, q, k, v, lengths)) <= 1e-5


@pytest.mark.parametrize("variant", ["tpu", "gpu"])
def test_decode_bf16_close_to_fp32_reference(variant):
    case = CASES[1]
    q, k, v, lengths = _inputs(case, jnp.bfloat16)
    got = _kernel(case, variant)(q, k, v, lengths)
    assert got.dtype == jnp.bfloat16
    assert relative_error(got, _reference(case, q, k, v, lengths)) <= 2e-2


def test_gpu_plan_splits_long_caches():
    p = decode.plan((1, 1, 8, 64), 4096, 2, variant="gpu", interpret=True, sliding_window=None,
                    logit_soft_cap=None, scale=0.125, block_kv=64)
    assert p.kv_splits == 16 and p.padded_rows == 16
    assert decode.plan((1, 16, 8, 64), 4096, 2, variant="gpu", interpret=True,
                       sliding_window=None, logit_soft_cap=None, scale=0.125,
                       block_kv=64).padded_rows == 64
