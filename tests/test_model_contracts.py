"""Model-level contracts the README and docs state, checked by value (fp32):

* packing isolation: a packed row's second segment gives the logits of that segment run
  alone (positions from 0), and perturbing the first segment does not move it (XLA and the
  Pallas kernels in interpret mode, with and without audio clips in the row);
* scanned layers equal unscanned ones with the same (restacked) params, and every
  `remat_policy` gives the same gradients;
* KV-cache decode equals the full forward with a sliding window and an attention soft-cap;
* closed forms: parameter counts of every preset, and the compiled train step's argument
  bytes per device against `chorus info`'s params + optimizer bytes.
"""

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone

import pallas_kernels
from chorus import sharding
from chorus.commands.info import info
from chorus.config import PRESETS, apply_overrides, load_config
from chorus.model import UnifiedAudioLM, init_cache
from chorus.training.lm_loss import make_lm_loss
from chorus.training.optimizer import make_optimizer
from chorus.training.partitioning import batch_specs, jit_train_step, state_shardings
from chorus.vocab import VocabLayout, num_audio_placeholders
from pallas_kernels.testing import relative_error

# The backbone test_heads and the decoding tests share (random_backbone builds it once per
# process); 2 decoder layers, so the layer order and the scan matter. Attention options are
# not parameters: the tests below vary them on these params. 16-wide kernel blocks keep the
# Pallas interpreter cheap.
BASE = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=1",
                                "model.tie_embeddings=false"])
CFG = apply_overrides(BASE, {"model.attention_block_q": 16, "model.attention_block_kv": 16})
LAYOUT = VocabLayout.from_model_config(CFG.model)
AUDIO = LAYOUT.audio_placeholder_id
MEL = 64  # mel frames per clip slot: 8 placeholders when fully valid
ROUTES = [("xla", None), ("pallas_interpret", "tpu"), ("pallas_interpret", "gpu")]
ROUTE_IDS = ["xla", "interpret-tpu", "interpret-gpu"]


def _config(**overrides):
    return apply_overrides(CFG, {f"model.{k}": v for k, v in overrides.items()})


@pytest.fixture(scope="module")
def params():
    return random_backbone(BASE, 0)[1]


def _variant(variant):
    return pallas_kernels.interpret_variant(variant) if variant else contextlib.nullcontext()


def _logits(config, variant, params, *args):
    model = UnifiedAudioLM(config)
    with _variant(variant):
        return jax.jit(lambda p, *a: model.apply({"params": p}, *a)["logits"])(params, *args)


# ----------------------------------------------------------------------------- packing


def _mel(seed, valid):
    rng = np.random.default_rng(seed)
    mel = rng.normal(-8.0, 4.0, (MEL, CFG.audio.n_mels)).astype(np.float32)
    return mel, np.arange(MEL) < valid


S1, S2, PAD = 22, 14, 4
SEG2 = slice(S1, S1 + S2)


def _rows(with_audio):
    """One batch [3, 40] (one compile per case):

    row 0: segment 1 (22 tokens), segment 2 (14 tokens), 4 pad (segment 0), positions from
           0 in each segment;
    row 1: row 0 with segment 1's tokens (and clip) changed;
    row 2: segment 2 alone, positions 0 .. 13, then padding (segment 0; causal attention
           keeps it out of segment 2's logits).
    With audio, segment 1 holds clip 0 (64 valid mel frames -> 8 placeholders) and segment 2
    clip 1 (46 valid -> 6 placeholders), in row order; row 2 holds clip 1 only.
    """
    rng = np.random.default_rng(1)
    seg1 = rng.integers(0, LAYOUT.text_size, S1)
    seg2 = rng.integers(0, LAYOUT.text_size, S2)
    other = (seg1 + 1 + rng.integers(0, LAYOUT.text_size - 1, S1)) % LAYOUT.text_size
    if with_audio:
        n1, n2 = num_audio_placeholders(MEL), num_audio_placeholders(46)
        assert (n1, n2) == (8, 6)
        seg1[3:3 + n1] = other[3:3 + n1] = AUDIO
        seg2[2:2 + n2] = AUDIO
    pad = lambda n: np.full(n, LAYOUT.pad_id)
    tokens = np.stack([np.concatenate([seg1, seg2, pad(PAD)]),
                       np.concatenate([other, seg2, pad(PAD)]),
                       np.concatenate([seg2, pad(S1 + PAD)])])
    packed_pos = np.concatenate([np.arange(S1), np.arange(S2), np.zeros(PAD, int)])
    alone_pos = np.concatenate([np.arange(S2), np.zeros(S1 + PAD, int)])
    packed_seg = np.concatenate([np.full(S1, 1), np.full(S2, 2), np.zeros(PAD, int)])
    alone_seg = np.concatenate([np.full(S2, 1), np.zeros(S1 + PAD, int)])
    batch = (tokens, np.stack([packed_pos, packed_pos, alone_pos]),
             np.stack([packed_seg, packed_seg, alone_seg]))
    batch = tuple(jnp.asarray(x, jnp.int32) for x in batch)
    if with_audio:
        (m0, k0), (m1, k1), (m0b, _) = _mel(2, MEL), _mel(3, 46), _mel(4, MEL)
        none = np.zeros(MEL, bool)
        feats = np.stack([np.stack([m0, m1]), np.stack([m0b, m1]), np.stack([m1, m0])])
        masks = np.stack([np.stack([k0, k1]), np.stack([k0, k1]), np.stack([k1, none])])
        batch += (jnp.asarray(feats), jnp.asarray(masks))
    return batch


# Every route without audio; with audio, XLA and the default interpreted kernel (the audio
# encoder's attention takes the same route; the GPU variant's segment masking is the one
# the text case checks).
PACKING = [(*route, False) for route in ROUTES] + [(*ROUTES[0], True), (*ROUTES[1], True)]


@pytest.mark.parametrize(("impl", "variant", "with_audio"), PACKING,
                         ids=[f"{r}-text" for r in ROUTE_IDS] + ["xla-audio",
                                                                  "interpret-tpu-audio"])
def test_packed_segment_equals_the_segment_alone(params, impl, variant, with_audio):
    logits = _logits(_config(attention_impl=impl), variant, params, *_rows(with_audio))
    alone = logits[2, :S2]
    # fp32 end to end: the packed and solo rows differ only in the kernels' block layout
    # (measured: 0 on XLA, 4e-7 relative through the kernels); the bound is 1e-5.
    assert relative_error(logits[0, SEG2], alone) <= 1e-5
    # Segment 1's keys are masked to exact zeros in segment 2's softmax, so changing them
    # changes nothing (measured: bit-identical).
    assert relative_error(logits[1, SEG2], logits[0, SEG2]) <= 1e-7
    # The perturbation is real: segment 1's own logits move.
    assert relative_error(logits[1, :S1], logits[0, :S1]) > 1e-2


# ----------------------------------------------------------------------------- scan / remat


def _text_batch():
    """[2, 24]: two packed segments per row (so the scan carries segment ids too)."""
    rng = np.random.default_rng(5)
    tokens = jnp.asarray(rng.integers(0, LAYOUT.text_size, (2, 24)), jnp.int32)
    positions = jnp.asarray(np.concatenate([np.arange(15), np.arange(9)])[None].repeat(2, 0))
    segments = jnp.asarray(np.array([[1] * 15 + [2] * 9] * 2), jnp.int32)
    # A fixed random linear functional of the logits: every logit gets its own cotangent.
    weights = jnp.asarray(rng.normal(size=(2, 24, LAYOUT.size)), jnp.float32)
    return (tokens, positions, segments), weights


def _value_and_grads(config, params, variant=None):
    model = UnifiedAudioLM(config)
    inputs, weights = _text_batch()

    def loss(p):
        logits = model.apply({"params": p}, *inputs)["logits"]
        return jnp.sum(logits * weights), logits

    with _variant(variant):
        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, grads


def _unstack(params):
    """Scanned decoder params (leading `layers` axis) -> the unscanned tree layers_0 ..."""
    dec = dict(params["decoder"])
    stacked = dec.pop("layers")
    for i in range(CFG.model.num_layers):
        dec[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return {**params, "decoder": dec}


def _restack(params):
    dec = dict(params["decoder"])
    layers = [dec.pop(f"layers_{i}") for i in range(CFG.model.num_layers)]
    return {**params, "decoder": {**dec, "layers": jax.tree.map(lambda *x: jnp.stack(x),
                                                                *layers)}}


def _assert_grads_close(got, want, tol):
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want),
                            strict=True):
        assert relative_error(g, w, floor=1e-6) <= tol, jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def scanned_reference(params):
    return _value_and_grads(_config(attention_impl="xla"), params)


def test_unscanned_layers_equal_scanned_on_restacked_params(params, scanned_reference):
    want_logits, want_grads = scanned_reference
    config = _config(attention_impl="xla", scan_layers=False)
    logits, grads = _value_and_grads(config, _unstack(params))
    assert "layers_1" in grads["decoder"] and "layers" not in grads["decoder"]
    # Same ops, same params: only XLA's fusion of the unrolled loop differs (measured 2e-7
    # on the logits, 5e-7 on the gradients).
    assert relative_error(logits, want_logits) <= 1e-6
    _assert_grads_close(_restack(grads), want_grads, 5e-6)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_policies_give_the_same_gradients(params, scanned_reference, remat):
    _, want_grads = scanned_reference
    _, grads = _value_and_grads(_config(attention_impl="xla", remat_policy=remat), params)
    # Rematerialization recomputes the same fp32 ops (measured: bit-identical on CPU).
    _assert_grads_close(grads, want_grads, 1e-6)


def test_remat_over_the_flash_kernel_gives_the_same_gradients(params, scanned_reference):
    """Full remat over the Pallas kernel's custom_vjp (how the 7B preset trains) against the
    XLA path without remat."""
    _, want_grads = scanned_reference
    _, grads = _value_and_grads(_config(attention_impl="pallas_interpret", remat_policy="full"),
                                params, "tpu")
    # The kernel's online softmax vs the reference's one-pass softmax: measured 4e-7
    # relative; 1e-5 is test_kernels_model's bound for the kernel's gradients.
    _assert_grads_close(grads, want_grads, 1e-5)


# ----------------------------------------------------------------------------- KV cache


WINDOW, SOFT_CAP = 8, 1.5
PROMPTS = (5, 11)  # one prompt shorter than the window, one longer
STEPS = 10  # decode steps: both rows run well past the window


def _decode_run(config, variant, params, tokens):
    """Prefill the ragged prompts, then STEPS single-token decode steps (one jitted scan).
    Returns (the prompts' last logits [B, V], the step logits [STEPS, B, V])."""
    model = UnifiedAudioLM(config)
    lengths = jnp.asarray(PROMPTS, jnp.int32)

    def run(params):
        variables = {"params": params}
        cache = init_cache(config, tokens.shape[0], 32)
        logits, _, cache = model.apply(variables, tokens[:, :max(PROMPTS)], lengths, cache,
                                       method=UnifiedAudioLM.prefill)
        last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]

        def step(cache, _):
            nxt = jnp.take_along_axis(tokens, cache.lengths[:, None], axis=1)
            out, _, cache = model.apply(variables, nxt, cache, method=UnifiedAudioLM.decode)
            return cache, out[:, 0]

        _, steps = jax.lax.scan(step, cache, None, length=STEPS)
        return last, steps

    with _variant(variant):
        return jax.jit(run)(params)


@pytest.mark.parametrize(("impl", "variant"), ROUTES[:2], ids=ROUTE_IDS[:2])
def test_kv_cache_decode_equals_full_forward_with_window_and_soft_cap(params, impl, variant):
    config = _config(attention_impl=impl, sliding_window=WINDOW, logit_soft_cap=SOFT_CAP)
    tokens = jnp.asarray(np.random.default_rng(6).integers(0, LAYOUT.text_size, (2, 24)),
                         jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(24), tokens.shape)
    full = _logits(config, variant, params, tokens, positions, jnp.ones_like(tokens))
    last, steps = _decode_run(config, variant, params, tokens)
    # fp32; the cache path sums the same keys in another order and block layout (measured
    # 3e-7 relative on every route).
    for b, n in enumerate(PROMPTS):
        assert relative_error(last[b], full[b, n - 1]) <= 1e-5
        assert relative_error(steps[:, b], full[b, n:n + STEPS]) <= 1e-5
    if impl != "xla":
        return
    # Both options bite on these inputs: without either, the full forward changes.
    for off in ({"sliding_window": None}, {"logit_soft_cap": None}):
        options = {"sliding_window": WINDOW, "logit_soft_cap": SOFT_CAP, **off}
        other = _logits(_config(attention_impl="xla", **options), None, params, tokens,
                        positions, jnp.ones_like(tokens))
        assert relative_error(other[:, WINDOW:], full[:, WINDOW:]) > 1e-2


# ----------------------------------------------------------------------------- closed forms


def _closed_form_counts(config):
    """Parameter counts of the architecture (chorus/model: GQA + SwiGLU decoder, conv +
    transformer + adaptor encoder), written out by hand."""
    m, a = config.model, config.audio
    d, vocab = m.d_model, VocabLayout.from_model_config(m).size
    attention = d * m.head_dim * (2 * m.num_heads + 2 * m.num_kv_heads)  # q, out; k, v
    block = attention + 3 * d * m.mlp_dim + 2 * d  # SwiGLU gate/up/down; two RMSNorm scales
    decoder = m.num_layers * block + d  # + final RMSNorm
    e = a.d_model
    conv = lambda c_in, c_out: 3 * c_in * c_out + c_out  # kernel width 3, bias
    encoder_block = 4 * e * e + 3 * e * a.mlp_dim + 2 * 2 * e  # MHA, SwiGLU, two LayerNorms
    if a.conv_kernel:  # LayerNorm, pointwise e -> 2e (GLU), depthwise K, LayerNorm, pointwise
        encoder_block += 2 * e + (2 * e * e + 2 * e) + a.conv_kernel * e + 2 * e + (e * e + e)
    encoder = (conv(a.n_mels, e) + conv(e, e) + a.num_layers * encoder_block + 2 * e
               + conv(e, a.adaptor_dim) + a.adaptor_dim * d + d)  # final LN, adaptor
    embed, head = vocab * d, 0 if m.tie_embeddings else d * vocab
    return {"total": embed + head + encoder + decoder, "embeddings": embed,
            "output_head": head, "audio_encoder": encoder, "decoder": decoder}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_parameter_counts_match_the_closed_form(preset):
    config = load_config(preset)
    # chorus info counts an abstract init (jax.eval_shape): nothing is allocated.
    counts = info(config)["parameters"]
    assert counts == _closed_form_counts(config)
    if preset == "tpu-v5p-64-7b":  # the README's figures
        assert round(counts["total"] / 1e9, 2) == 8.52
        text = counts["decoder"] + counts["embeddings"] + counts["output_head"]
        assert round(text / 1e9, 2) == 7.66  # "decoder + embeddings + untied head"
        assert round(counts["audio_encoder"] / 1e9, 2) == 0.86


# A train step small enough to compile in seconds, on tests/conftest.py's 8 CPU devices with
# every parameter axis split (fsdp 4 x tensor 2, sizes divisible by both).
COMPILE = ["model.num_layers=1", "audio.num_layers=1", "mesh.data=1", "mesh.fsdp=4",
           "mesh.tensor=2", "train.batch_size=8", "train.seq_len=32",
           "train.max_audio_clips=1", "train.max_mel_frames=64"]


def test_compiled_argument_bytes_per_device_match_chorus_info():
    """The train step `chorus compile` builds (same state / batch shardings, same jit), for
    the CPU mesh instead of a TPU topology: its per-device argument bytes are exactly info's
    params + AdamW moments per device, plus this device's batch shard and the scalars."""
    config = load_config("cpu-tiny", COMPILE)
    mesh = sharding.make_mesh(config.mesh)
    model = UnifiedAudioLM(config)
    tx = make_optimizer(config.optim, config.train.steps)
    state, state_shards = state_shardings(model, config, mesh, tx)
    batch = batch_specs(config, mesh)
    step = jit_train_step(make_lm_loss(model), tx, state_shards, mesh, batch)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
    with sharding.activate(mesh):
        lowered = step.lower(state, batch, rng)
    # Argument buffers are fixed by the partitioned signature, not by backend optimization:
    # level 0 halves the compile and leaves them unchanged.
    compiled = lowered.compile({"xla_backend_optimization_level": 0})
    got = compiled.memory_analysis().argument_size_in_bytes

    per_device = info(config, num_devices=8)["bytes_per_device"]
    # The batch: 8 rows over data x fsdp = 4 ways, 2 rows per device.
    batch_bytes = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                      for x in batch.values())
    assert batch_bytes == 2 * (5 * 32 * 4 + 64 * config.audio.n_mels * 4 + 64)
    # step, two non-finite counters, Adam's and the schedule's counts (int32 scalars); the lm
    # loss ignores the rng, so XLA drops that argument.
    scalars = [x for x in jax.tree.leaves(state) if x.shape == ()]
    assert len(scalars) == 5
    assert got == per_device["params_plus_optimizer"] + batch_bytes + 4 * len(scalars)
