"""MTP heads: config, targets and loss against loop references, causality, gradients, sharding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone

from chorus import sharding
from chorus.config import ConfigError, MeshConfig, load_config, settings_from
from chorus.model import UnifiedAudioLM
from chorus.model.heads import (
    MTPConfig,
    apply_depth,
    build_mtp,
    depth_params,
    init_mtp_params,
    make_mtp_loss,
    mtp_logical_specs,
    mtp_logits,
    mtp_loss,
    mtp_targets,
)
from chorus.vocab import VocabLayout

CFG = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=1",
                               "model.tie_embeddings=false"])
LAYOUT = VocabLayout.from_model_config(CFG.model)
K = 2
L = 16
MTP = {"sequential": MTPConfig("sequential", K, 0.3), "parallel": MTPConfig("parallel", K, 0.2)}


def test_config_validation_and_settings_from():
    cfg = settings_from(MTPConfig, {"design": "parallel", "num_heads": 4, "loss_weight": 0.1},
                        "mtp")
    assert cfg == MTPConfig("parallel", 4, 0.1)
    with pytest.raises(ConfigError, match=r"mtp.design: expected one of .* got 'tree'"):
        MTPConfig(design="tree")
    with pytest.raises(ConfigError, match=r"mtp.num_heads: expected an int in 1..15.* got 0"):
        MTPConfig(num_heads=0)
    with pytest.raises(ConfigError, match=r"mtp.loss_weight: expected a number >= 0, got -1"):
        MTPConfig(loss_weight=-1)
    with pytest.raises(ConfigError, match=r"mtp: unknown field\(s\) \['depth'\]"):
        settings_from(MTPConfig, {"depth": 2}, "mtp")


def _batch():
    """Two rows: [seg 1 (7) | seg 2 (6) | pad (3)] and one 16-token segment; some masked."""
    rng = np.random.default_rng(0)
    seg = np.zeros((2, L), np.int32)
    seg[0, :7], seg[0, 7:13], seg[1] = 1, 2, 1
    tokens = rng.integers(0, LAYOUT.text_size, size=(2, L)).astype(np.int32)
    targets = np.roll(tokens, -1, axis=1)
    loss_mask = (seg > 0).astype(np.float32)
    for b, i in [(0, 6), (0, 12), (1, 15)]:  # a segment's last target is outside it
        targets[b, i] = LAYOUT.eos_id
    loss_mask[1, 3] = loss_mask[0, 9] = 0.0  # e.g. prompt tokens
    tokens[seg == 0] = targets[seg == 0] = LAYOUT.pad_id
    positions = np.zeros((2, L), np.int32)
    positions[0, :7], positions[0, 7:13], positions[1] = np.arange(7), np.arange(6), np.arange(L)
    return {k: jnp.asarray(v) for k, v in dict(tokens=tokens, targets=targets,
                                               loss_mask=loss_mask, segment_ids=seg,
                                               positions=positions).items()}


def _valid(batch, j):
    """Loop reference of which (b, i) depth j trains on."""
    seg, mask = np.asarray(batch["segment_ids"]), np.asarray(batch["loss_mask"])
    out = np.zeros(seg.shape, bool)
    for b in range(seg.shape[0]):
        for i in range(L - j):
            out[b, i] = (seg[b, i] != 0 and all(seg[b, i + m] == seg[b, i] for m in range(j + 1))
                         and mask[b, i + j] > 0)
    return out


def test_mtp_targets_match_a_loop_reference():
    batch = _batch()
    tgt = np.asarray(batch["targets"])
    for j in range(1, K + 1):
        inputs, target, weight = (np.asarray(x) for x in mtp_targets(
            batch["targets"], batch["loss_mask"], batch["segment_ids"], j))
        valid = _valid(batch, j)
        np.testing.assert_array_equal(weight, valid.astype(np.float32))
        assert valid.sum() > 0
        for b, i in zip(*np.nonzero(valid), strict=True):
            assert inputs[b, i] == tgt[b, i + j - 1] and target[b, i] == tgt[b, i + j]
        # Segment 1 is indices 0..6: depth j trains up to i = 6 - j, never across the boundary.
        assert valid[0, 6 - j] and not valid[0, 7 - j:7].any()


@pytest.fixture(scope="module")
def backbone():
    return random_backbone(CFG, 0)  # shared by the decoding test modules


@pytest.fixture(scope="module")
def head_sets():
    out = {}
    for design, mtp in MTP.items():
        heads, hp, _ = init_mtp_params(CFG, mtp, jax.random.key(1))
        if design == "parallel":  # zero-initialized; give the residual blocks some weight
            leaves, tree = jax.tree.flatten(hp)
            keys = jax.random.split(jax.random.key(2), len(leaves))
            hp = tree.unflatten([0.2 * jax.random.normal(k, x.shape)
                                 for k, x in zip(keys, leaves, strict=True)])
        out[design] = (mtp, heads, hp)
    return out


DESIGNS = pytest.mark.parametrize("design", list(MTP))


def _hidden(model, params, batch):
    return model.apply({"params": params}, batch["tokens"], batch["positions"],
                       batch["segment_ids"])["hidden"]


@functools.partial(jax.jit, static_argnums=0)
def _depth(heads, hp, j, prev, emb, positions, segment_ids):
    return apply_depth(heads, depth_params(hp, j), prev, emb, positions, segment_ids)


def _reference_loss(model, params, heads, hp, hidden, batch, mtp):
    """Loop over depths with explicit per-position gathers and a numpy cross-entropy."""
    tgt = np.asarray(batch["targets"])
    prev, total = hidden, 0.0
    for j in range(1, mtp.num_heads + 1):
        if mtp.design == "sequential":
            tok = np.zeros_like(tgt)
            for b in range(tgt.shape[0]):
                for i in range(L):
                    tok[b, i] = tgt[b, i + j - 1] if i + j - 1 < L else 0
            emb = model.apply({"params": params}, jnp.asarray(tok),
                              method=UnifiedAudioLM.embed_tokens)
            prev, out, _ = _depth(heads, hp, j, prev, emb, batch["positions"],
                                  batch["segment_ids"])
        else:
            w, bias = hp[f"heads_{j - 1}"]["kernel"], hp[f"heads_{j - 1}"]["bias"]
            out = hidden + jax.nn.silu(hidden @ w + bias)
        logits = np.asarray(model.apply({"params": params}, out, method=UnifiedAudioLM.logits),
                            np.float64)
        valid = _valid(batch, j)
        nll = []
        for b, i in zip(*np.nonzero(valid), strict=True):
            row = logits[b, i]
            logz = np.log(np.exp(row - row.max()).sum()) + row.max()
            nll.append(logz - row[tgt[b, i + j]])
        total += np.mean(nll)
    return mtp.loss_weight / mtp.num_heads * total


@DESIGNS
def test_mtp_loss_matches_loop_reference(backbone, head_sets, design):
    model, params = backbone
    mtp, h, hp = head_sets[design]
    batch = _batch()
    hidden = _hidden(model, params, batch)
    loss, metrics = jax.jit(lambda hp, hidden: mtp_loss(model, params, h, hp, hidden, batch,
                                                        mtp))(hp, hidden)
    want = _reference_loss(model, params, h, hp, hidden, batch, mtp)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert set(metrics) == {"mtp/loss"} | {f"mtp/{m}_{j}" for m in ("ce", "accuracy")
                                           for j in range(1, K + 1)}


@DESIGNS
def test_distilled_mtp_loss_is_the_loss_against_the_backbones_greedy_tokens(backbone, head_sets,
                                                                            design):
    """mtp.targets="backbone": the loop reference on a batch whose supervised targets are the
    backbone's argmax (numpy), the rest unchanged; it differs from the data loss."""
    import dataclasses

    model, params = backbone
    mtp, h, hp = head_sets[design]
    distill = dataclasses.replace(mtp, targets="backbone")
    batch = _batch()
    hidden = _hidden(model, params, batch)
    loss, _ = jax.jit(lambda hp, hidden: mtp_loss(model, params, h, hp, hidden, batch,
                                                  distill))(hp, hidden)
    logits = np.asarray(model.apply({"params": params}, hidden, method=UnifiedAudioLM.logits))
    supervised = np.asarray(batch["loss_mask"]) > 0
    greedy = np.where(supervised, logits.argmax(-1), np.asarray(batch["targets"]))
    assert (greedy != np.asarray(batch["targets"]))[supervised].any()  # a random backbone
    want = _reference_loss(model, params, h, hp, hidden,
                           {**batch, "targets": jnp.asarray(greedy, jnp.int32)}, mtp)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    data = _reference_loss(model, params, h, hp, hidden, batch, mtp)
    assert abs(want - data) > 1e-3


def test_mtp_targets_are_validated():
    with pytest.raises(ConfigError, match="mtp.targets"):
        MTPConfig("parallel", 2, 0.3, targets="teacher")


@DESIGNS
def test_depth_j_sees_only_its_segment_and_tokens_up_to_i_plus_j(backbone, head_sets, design):
    """Depth j at index i may depend on t_0..t_{i+j} of its own segment, nothing else."""
    model, params = backbone
    mtp, h, hp = head_sets[design]
    batch = _batch()
    logits_fn = jax.jit(lambda batch: mtp_logits(model, params, h, hp,
                                                 _hidden(model, params, batch), batch))
    base = np.asarray(logits_fn(batch))
    # Change token t_5 of row 1 (tokens[5] = targets[4]): depth j must not move at i < 5 - j.
    changed = dict(batch, tokens=batch["tokens"].at[1, 5].add(1),
                   targets=batch["targets"].at[1, 4].add(1))
    moved = np.abs(np.asarray(logits_fn(changed)) - base).max(-1)[:, 1]  # [K, L]
    for j in range(1, K + 1):
        # Sequential depth j reads t_{i+j}; a parallel head reads only h_i (t_0..t_i).
        first = 5 - j if mtp.design == "sequential" else 5
        assert moved[j - 1, :first].max() < 1e-5
        assert moved[j - 1, first] > 1e-3
    # Change segment 2 of row 0 entirely: segment 1 (indices 0..6) must not move.
    other = dict(batch, tokens=batch["tokens"].at[0, 7:13].add(3),
                 targets=batch["targets"].at[0, 7:12].add(3))
    moved = np.abs(np.asarray(logits_fn(other)) - base).max(-1)[:, 0]
    for j in range(1, K + 1):  # positions whose inputs t_0..t_{i+j} all lie in segment 1
        assert moved[j - 1, :7 - j].max() < 1e-5
    assert moved[:, 7:13].max() > 1e-3


def _norm(tree):
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_joint_and_frozen_backbone_gradients(backbone, head_sets):
    """make_mtp_loss is design-agnostic; the sequential design also reads the shared
    embedding, the harder case to freeze."""
    model, params = backbone
    mtp, h, hp = head_sets["sequential"]
    batch = dict(_batch(), audio_features=None, audio_mask=None)
    state = {"backbone": params, "mtp": hp}
    grads = {}
    for joint in (True, False):
        fn = jax.jit(jax.value_and_grad(make_mtp_loss(model, h, mtp, train_backbone=joint),
                                        has_aux=True))
        (loss, metrics), grads[joint] = fn(state, batch, jax.random.key(0))
        if not joint:
            np.testing.assert_allclose(float(loss), float(metrics["mtp/loss"]), rtol=1e-6)
        else:
            np.testing.assert_allclose(float(loss), float(metrics["ce"] + metrics["mtp/loss"]),
                                       rtol=1e-6)
    backbone_grads = grads[True]["backbone"]
    assert _norm(backbone_grads["decoder"]) > 0
    assert _norm(backbone_grads["embed"]) > 0 and _norm(backbone_grads["lm_head"]) > 0
    assert _norm(grads[False]["backbone"]) == 0.0  # frozen: nothing reaches the backbone
    for j in range(1, K + 1):  # every depth learns
        assert _norm(depth_params(grads[False]["mtp"], j)) > 0, j
    # The MTP parameters' gradient does not depend on whether the backbone trains.
    for a, b in zip(jax.tree.leaves(grads[True]["mtp"]), jax.tree.leaves(grads[False]["mtp"]),
                    strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_heads_shard_like_the_backbone():
    specs = mtp_logical_specs(build_mtp(CFG.model, MTP["sequential"]), CFG)
    depth = specs["depths"]["depth"]  # stacked over depths, like the backbone's layers
    assert tuple(depth["combine"]["kernel"]) == ("layers", "mlp", "embed")
    assert tuple(depth["block"]["attn"]["query"]["kernel"]) == ("layers", "embed", "heads",
                                                                "head_dim")
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    _, params, shardings = init_mtp_params(CFG, MTP["parallel"], jax.random.key(0), mesh)
    kernel = params["heads_0"]["kernel"]
    assert tuple(kernel.sharding.spec) == ("fsdp", "tensor")
    assert kernel.sharding == shardings["heads_0"]["kernel"]
