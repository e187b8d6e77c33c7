"""The pure-JAX attention reference every kernel test trusts, checked itself: against a plain
NumPy loop (per query, per key: mask, soft cap, softmax; float64) for every option of
pallas_kernels/reference.py, and against jax.nn.dot_product_attention where that supports the
option (causal, sliding window, segments as a mask, grouped-query, scale), values and grads."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.reference import attention_reference, decode_attention_reference
from pallas_kernels.testing import packed_segments, random_cache, random_qkv, relative_error

# Compile-bound on CPU: XLA optimization level 0 about halves the compile time of each case.
_FAST = {"xla_backend_optimization_level": 0}

# fp32 reference vs a float64 loop (or jax.nn, fp32) on unit-normal inputs: measured <= 2e-7
# (roundoff of a 9..30-term softmax); 2e-6 leaves 10x headroom and is far below any masking
# mistake (one key too many or too few moves an output by ~1/n_keys >= 3e-2).
TOL = 2e-6


def _loop_attention(q, k, v, *, causal, window=None, soft_cap=None, segment_ids=None,
                    scale=None, chunk_size=None, q_pos=None, k_len=None):
    """out[b, i, h] = sum_j p_j v[b, j, h // G] over the keys query i may see, float64 loops.

    q_pos: each query's position (default 0..Sq-1); k_len: keys valid per row (default all).
    A query that sees no key gets zeros.
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    group = hq // hkv
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    out = np.zeros_like(q)
    for bi in range(b):
        for i in range(sq):
            pos = i if q_pos is None else int(q_pos[bi][i])
            for h in range(hq):
                kh = h // group
                keys, logits = [], []
                for j in range(sk if k_len is None else int(k_len[bi])):
                    if causal and j > pos:
                        continue
                    if window is not None and pos - j >= window:
                        continue
                    if chunk_size is not None and j // chunk_size > pos // chunk_size:
                        continue
                    if segment_ids is not None and segment_ids[bi][i] != segment_ids[bi][j]:
                        continue
                    s = float(q[bi, i, h] @ k[bi, j, kh]) * scale
                    if soft_cap is not None:
                        s = soft_cap * np.tanh(s / soft_cap)
                    keys.append(j)
                    logits.append(s)
                if not keys:
                    continue
                p = np.exp(np.asarray(logits) - max(logits))
                p /= p.sum()
                out[bi, i, h] = p @ v[bi, keys, kh]
    return out


@dataclasses.dataclass(frozen=True)
class Case:
    seq: int
    q_heads: int
    kv_heads: int
    causal: bool = True
    window: int | None = None
    soft_cap: float | None = None
    segments: bool = False
    scale: float | None = None
    chunk_size: int | None = None
    batch: int = 2
    head_dim: int = 8

    def __str__(self):
        parts = [f"S{self.seq}", f"H{self.q_heads}_{self.kv_heads}",
                 "causal" if self.causal else "full"]
        parts += [f"win{self.window}"] * (self.window is not None)
        parts += [f"cap{self.soft_cap}"] * (self.soft_cap is not None)
        parts += ["seg"] * self.segments
        parts += [f"scale{self.scale}"] * (self.scale is not None)
        parts += [f"chunk{self.chunk_size}"] * (self.chunk_size is not None)
        return "-".join(parts)


CASES = [
    Case(9, 2, 2, causal=False),
    Case(9, 2, 2),
    Case(17, 4, 2, window=5),  # GQA 2: query heads 0, 1 read kv head 0; 2, 3 read kv head 1
    Case(17, 3, 1, window=1),  # MQA, a window of one: each query sees only itself
    Case(13, 4, 2, causal=False, window=4, scale=0.5),  # non-causal window: only the past is cut
    # soft cap small enough to bite (unit-normal q.k / sqrt(8) reaches ~3)
    Case(16, 2, 1, soft_cap=1.5),
    Case(16, 2, 2, causal=False, soft_cap=2.0, scale=0.7),
    Case(24, 4, 2, segments=True),
    Case(24, 4, 1, causal=False, window=6, soft_cap=2.0, segments=True),
    Case(20, 2, 1, causal=False, chunk_size=6),  # chunked-causal streaming encoder
    Case(20, 2, 2, chunk_size=6, window=8),
]


def _inputs(case: Case):
    q, k, v, dout = random_qkv(case.seq, case.batch, case.seq, case.q_heads, case.kv_heads,
                               case.head_dim)
    seg = packed_segments(case.seq, case.batch, case.seq, 6.0) if case.segments else None
    return q, k, v, dout, seg


def _opts(case: Case, seg):
    return dict(segment_ids=seg, causal=case.causal, sliding_window=case.window,
                logit_soft_cap=case.soft_cap, scale=case.scale, chunk_size=case.chunk_size)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference_matches_numpy_loop(case):
    q, k, v, _, seg = _inputs(case)
    if case.segments:  # the draw really packs several documents in each row
        assert all(len(set(row)) >= 3 for row in np.asarray(seg).tolist())
    got = jax.jit(lambda q, k, v: attention_reference(q, k, v, **_opts(case, seg)),
                  compiler_options=_FAST)(q, k, v)
    assert got.shape == q.shape and got.dtype == q.dtype
    want = _loop_attention(q, k, v, causal=case.causal, window=case.window,
                           soft_cap=case.soft_cap, scale=case.scale, chunk_size=case.chunk_size,
                           segment_ids=None if seg is None else np.asarray(seg))
    assert relative_error(got, want) <= TOL


def _nn_mask(case: Case, seg):
    """jax.nn's boolean mask [B, 1, S, S] for what it has no flag for: segments, a non-causal
    window."""
    s = case.seq
    qi, kj = np.arange(s)[:, None], np.arange(s)[None, :]
    mask = np.ones((case.batch, 1, s, s), bool)
    if seg is not None:
        seg = np.asarray(seg)
        mask &= (seg[:, :, None] == seg[:, None, :])[:, None]
    if case.window is not None and not case.causal:
        mask &= qi - kj < case.window
    return jnp.asarray(mask)


NN_CASES = [c for c in CASES if c.soft_cap is None and c.chunk_size is None]


@pytest.mark.parametrize("case", NN_CASES, ids=str)
def test_reference_matches_jax_nn_values_and_grads(case):
    q, k, v, dout, seg = _inputs(case)
    mask = _nn_mask(case, seg)
    # jax.nn's window (left, right) includes both ends: window W = the W - 1 keys before.
    local = (case.window - 1, 0) if case.window is not None and case.causal else None

    def both(q, k, v, dout):
        ours = lambda q, k, v: attention_reference(q, k, v, **_opts(case, seg))
        theirs = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, mask=mask, scale=case.scale, is_causal=case.causal,
            local_window_size=local, implementation="xla")
        return [(out, vjp(dout)) for out, vjp in (jax.vjp(f, q, k, v) for f in (ours, theirs))]

    (got, got_grads), (want, want_grads) = jax.jit(both, compiler_options=_FAST)(q, k, v, dout)
    assert relative_error(got, want) <= TOL
    for name, g, w in zip("qkv", got_grads, want_grads, strict=True):
        assert relative_error(g, w) <= TOL, name


def test_decode_reference_matches_numpy_loop_and_the_full_forward():
    # Ragged lengths; sliding window, soft cap and GQA together.
    w, t, hq, hkv, d = 4, 30, 4, 2, 8
    lengths = np.asarray([4, 19, 30])
    opts = dict(sliding_window=7, logit_soft_cap=2.0)
    q, kc, vc = random_cache(1, 3, w, hq, hkv, d, t)
    got = jax.jit(lambda *a: decode_attention_reference(*a, **opts), compiler_options=_FAST)(
        q, kc, vc, jnp.asarray(lengths))
    pos = lengths[:, None] - w + np.arange(w)[None, :]
    want = _loop_attention(q, kc, vc, causal=True, window=7, soft_cap=2.0, q_pos=pos,
                           k_len=lengths)
    assert relative_error(got, want) <= TOL
    # The same through the full-sequence reference: put row b's W queries at positions
    # lengths[b] - W .. lengths[b] - 1 of a T-long causal run over the whole cache (causality
    # hides the rows past each length) and read those positions back.
    rows = jnp.asarray(pos)[:, :, None, None]
    q_full = jnp.zeros((3, t, hq, d)).at[jnp.arange(3)[:, None], pos].set(q)
    full = jax.jit(lambda *a: attention_reference(*a, **opts), compiler_options=_FAST)(
        q_full, kc, vc)
    assert relative_error(got, jnp.take_along_axis(full, rows, axis=1)) <= TOL


def test_fully_masked_rows_give_zeros():
    # A decode query before the first cache row (length < W) sees no key: zeros, not NaN or
    # a uniform average of the cache (the reason _MASKED is finite and probs are re-masked).
    q, kc, vc = random_cache(2, 1, 4, 2, 2, 8, 10)
    out = np.asarray(jax.jit(decode_attention_reference, compiler_options=_FAST)(
        q, kc, vc, jnp.asarray([2])))
    np.testing.assert_array_equal(out[0, :2], 0.0)
    want = _loop_attention(q, kc, vc, causal=True, q_pos=[[-2, -1, 0, 1]], k_len=[2])
    assert relative_error(out, want) <= TOL
