"""Flash attention (forward + custom backward), both Pallas variants in interpret mode, vs the
pure-JAX reference in fp32."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

import pallas_kernels
from pallas_kernels.reference import attention_reference
from pallas_kernels.testing import (
    attention_and_grads,
    packed_segments,
    random_qkv,
    relative_error,
)

FP32_TOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Case:
    batch: int
    seq: int
    q_heads: int
    kv_heads: int
    head_dim: int = 32
    causal: bool = True
    window: int | None = None
    soft_cap: float | None = None
    segments: bool = False
    block_q: int = 16
    block_kv: int = 32
    variants: tuple[str, ...] = ("tpu", "gpu")

    def __str__(self):
        parts = [f"S{self.seq}", f"G{self.q_heads // self.kv_heads}", f"D{self.head_dim}",
                 "causal" if self.causal else "full"]
        parts += [f"win{self.window}"] * (self.window is not None)
        parts += [f"cap{self.soft_cap}"] * (self.soft_cap is not None)
        parts += ["seg"] * self.segments
        return "-".join(parts)


CASES = [
    Case(1, 1, 2, 2),  # a single token
    Case(2, 7, 4, 2, causal=False, segments=True),  # shorter than one block
    Case(1, 129, 4, 1, segments=True),  # one past a block edge, GQA 4, packed documents
    # many blocks: causal + sliding-window skipping on both sides of the band, soft cap
    Case(1, 1000, 2, 1, window=200, soft_cap=5.0, block_q=128, block_kv=64),
    Case(1, 70, 2, 1, causal=False, window=9, soft_cap=3.0, segments=True),
    Case(1, 40, 2, 1, head_dim=128, variants=("tpu",)),  # [B, S, H*D] view, no transposes
    Case(1, 40, 4, 4, head_dim=48, variants=("gpu",)),  # head dim padded to a power of two
]
PAIRS = [pytest.param(case, variant, id=f"{case}-{variant}")
         for case in CASES for variant in case.variants]


def _run(case: Case, variant: str, dtype):
    q, k, v, dout = random_qkv(case.seq, case.batch, case.seq, case.q_heads, case.kv_heads,
                               case.head_dim, dtype)
    seg = packed_segments(case.seq + 1, case.batch, case.seq, 20.0) if case.segments else None
    opts = dict(segment_ids=seg, causal=case.causal, sliding_window=case.window,
                logit_soft_cap=case.soft_cap)

    @jax.jit
    def kernel(q, k, v, dout):
        with pallas_kernels.interpret_variant(variant):
            return attention_and_grads(
                lambda q, k, v: pallas_kernels.attention(
                    q, k, v, impl="pallas_interpret", block_q=case.block_q,
                    block_kv=case.block_kv, **opts), q, k, v, dout)

    @jax.jit
    def reference(q, k, v, dout):
        f32 = [x.astype(jnp.float32) for x in (q, k, v, dout)]
        return attention_and_grads(lambda q, k, v: attention_reference(q, k, v, **opts), *f32)

    got_out, got_grads = kernel(q, k, v, dout)
    want_out, want_grads = reference(q, k, v, dout)
    assert got_out.dtype == dtype and got_out.shape == q.shape
    return {name: relative_error(got, want) for name, got, want in
            zip(("out", "dq", "dk", "dv"), (got_out, *got_grads), (want_out, *want_grads),
                strict=True)}


@pytest.mark.parametrize("case,variant", PAIRS)
def test_flash_matches_reference_fp32(case, variant):
    errors = _run(case, variant, jnp.float32)
    assert max(errors.values()) <= FP32_TOL, errors


@pytest.mark.parametrize("variant", ["tpu", "gpu"])
def test_flash_bf16_close_to_fp32_reference(variant):
    # bf16 inputs; probabilities and dS are rounded to bf16 before the PV / dS K matmuls.
    errors = _run(Case(1, 72, 4, 2, segments=True), variant, jnp.bfloat16)
    assert max(errors.values()) <= 2e-2, errors

