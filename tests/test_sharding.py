"""The sharded model computes what the single-device model computes (fp32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chorus import sharding
from chorus.config import MeshConfig, load_config
from chorus.model import example_batch, init_params
from chorus.training.lm_loss import make_lm_loss
from chorus.vocab import VocabLayout

CFG = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=1"])


def _batch():
    layout = VocabLayout.from_model_config(CFG.model)
    batch = example_batch(CFG, 8, 32, num_clips=1, mel_frames=64)
    rng = np.random.default_rng(0)
    batch["tokens"] = rng.integers(0, layout.text_size, size=(8, 32)).astype(np.int32)
    batch["tokens"][:, 1:9] = layout.audio_placeholder_id  # 64 mel frames -> 8 placeholders
    batch["targets"] = np.roll(batch["tokens"], -1, axis=1)
    batch["loss_mask"][:, 9:] = 1.0
    batch["audio_features"] = rng.normal(size=batch["audio_features"].shape).astype(np.float32)
    return batch


@pytest.fixture(scope="module")
def reference():
    model, params, _ = init_params(CFG, jax.random.key(0))
    loss_fn = make_lm_loss(model)
    batch = _batch()
    (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        params, batch, jax.random.key(1))
    logits = jax.jit(lambda p, b: model.apply({"params": p}, b["tokens"], b["positions"],
                                              b["segment_ids"], b["audio_features"],
                                              b["audio_mask"])["logits"])(params, batch)
    return model, params, batch, loss, grads, logits


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_sharded_forward_and_gradients_match_single_device(reference, shape):
    model, params, batch, loss, grads, logits = reference
    mesh = sharding.make_mesh(MeshConfig(*shape))
    _, _, param_shardings = init_params(CFG, jax.random.key(0), mesh)
    sharded_params = jax.device_put(params, param_shardings)
    sharded_batch = jax.device_put(batch, sharding.batch_shardings(mesh, batch))
    loss_fn = make_lm_loss(model)
    with sharding.activate(mesh):
        (s_loss, _), s_grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
            sharded_params, sharded_batch, jax.random.key(1))
        s_logits = jax.jit(lambda p, b: model.apply(
            {"params": p}, b["tokens"], b["positions"], b["segment_ids"], b["audio_features"],
            b["audio_mask"])["logits"])(sharded_params, sharded_batch)
    # Params really are distributed (not silently replicated) on multi-axis meshes.
    if shape[1] > 1:
        embed = sharded_params["embed"]["embedding"]
        assert embed.sharding.shard_shape(embed.shape) != embed.shape
    np.testing.assert_allclose(s_logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_loss, loss, rtol=1e-6)
    for (path, g), s in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree.leaves(s_grads), strict=True):
        np.testing.assert_allclose(s, g, rtol=1e-4, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))


def test_params_born_sharded():
    mesh = sharding.make_mesh(MeshConfig(1, 4, 2))
    _, params, shardings = init_params(CFG, jax.random.key(0), mesh)
    q = params["decoder"]["layers"]["attn"]["query"]["kernel"]  # [layers, embed, heads, hd]
    assert q.sharding == shardings["decoder"]["layers"]["attn"]["query"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert jnp.all(jnp.isfinite(q))
