"""The backbone with its attention forced through the Pallas kernels (interpret mode) matches
the XLA-reference backbone: training forward + parameter gradients, prefill and a verify
window of decode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels
from chorus.config import apply_overrides, cpu_tiny
from chorus.model import UnifiedAudioLM, init_cache
from pallas_kernels.testing import relative_error

BATCH, LENGTH = 2, 40
TINY = {"model.num_layers": 1, "model.d_model": 64, "model.num_heads": 4,
        "model.num_kv_heads": 2, "model.head_dim": 16, "model.mlp_dim": 128,
        "model.sliding_window": 24, "model.attention_block_q": 16,
        "model.attention_block_kv": 16}


def _model(impl: str) -> UnifiedAudioLM:
    return UnifiedAudioLM(apply_overrides(cpu_tiny(), {**TINY, "model.attention_impl": impl}))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 500, (BATCH, LENGTH)), jnp.int32)
    positions = jnp.asarray(np.concatenate([np.arange(25), np.arange(15)])[None].repeat(BATCH, 0))
    segments = jnp.asarray(np.array([[1] * 25 + [2] * 15] * BATCH, np.int32))
    # Text-only init: the audio encoder is not called, so it is not built either.
    params = jax.jit(_model("xla").init)(jax.random.key(0), tokens, positions,
                                         segments)["params"]
    return params, tokens, positions, segments


def _train(impl: str, variant: str, params, tokens, positions, segments):
    model = _model(impl)

    def loss(params):
        logits = model.apply({"params": params}, tokens, positions, segments)["logits"]
        return jnp.mean(jnp.square(logits)), logits

    with pallas_kernels.interpret_variant(variant):
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def test_training_forward_and_grads_match_xla(inputs):
    (_, want_logits), want_grads = _train("xla", "tpu", *inputs)
    (_, got_logits), got_grads = _train("pallas_interpret", "tpu", *inputs)
    assert relative_error(got_logits, want_logits) <= 1e-5
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        assert relative_error(got, want, floor=1e-6) <= 1e-5


def _generate(impl: str, variant: str, params, tokens):
    model = _model(impl)
    cache = init_cache(model.config, BATCH, 64)
    prompt_lengths = jnp.array([30, 17], jnp.int32)

    def run(params, cache):
        variables = {"params": params}
        _, _, cache = model.apply(variables, tokens[:, :30], prompt_lengths, cache,
                                  method=UnifiedAudioLM.prefill)
        logits, _, _ = model.apply(variables, tokens[:, 30:33], cache,
                                   method=UnifiedAudioLM.decode)
        return logits

    with pallas_kernels.interpret_variant(variant):
        return jax.jit(run)(params, cache)


def test_prefill_and_verify_window_match_xla(inputs):
    params, tokens, _, _ = inputs
    want = _generate("xla", "gpu", params, tokens)
    got = _generate("pallas_interpret", "gpu", params, tokens)
    assert relative_error(got, want) <= 1e-5


def _extend(impl: str, variant: str, params, tokens):
    """A prefill, then one extend window of 40 tokens with ragged per-row counts: wider than
    the kernels' 16-query window, so the kernel routes answer it in slices, while the XLA
    route attends over the whole window at once (the unsliced reference)."""
    model = _model(impl)
    cache = init_cache(model.config, BATCH, 64)

    def run(params, cache):
        variables = {"params": params}
        _, _, cache = model.apply(variables, tokens[:, :12], jnp.array([12, 5]), cache,
                                  method=UnifiedAudioLM.prefill)
        logits, _, cache = model.apply(variables, tokens[:, :40], jnp.array([40, 23]), cache,
                                       method=UnifiedAudioLM.extend)
        return logits, cache.lengths

    with pallas_kernels.interpret_variant(variant):
        return jax.jit(run)(params, cache)


def test_wide_extend_window_matches_xla(inputs):
    params, tokens, _, _ = inputs
    want, lengths = _extend("xla", "gpu", params, tokens)
    got, _ = _extend("pallas_interpret", "gpu", params, tokens)
    np.testing.assert_array_equal(lengths, [52, 28])
    assert relative_error(got[0], want[0]) <= 1e-5
    assert relative_error(got[1, :23], want[1, :23]) <= 1e-5
