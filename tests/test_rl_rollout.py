"""Rollouts (sampling through chorus.decoding.generate) and teacher-forced scoring, on one
device and sharded over the 8 fake CPU devices' mesh; the on-policy source's resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chorus import sharding
from chorus.config import DecodeConfig, MeshConfig, load_config
from chorus.model.factory import backbone_init
from chorus.model.unified import UnifiedAudioLM
from chorus.rl import rollout, value_head
from chorus.rl.experiment import OnPolicySource
from chorus.training.experiment import Experiment
from chorus.training.state import init_params, unbox
from chorus.vocab import VocabLayout

# One sampler configuration (and G) for every test: generate compiles once per static setting.
SETTINGS = DecodeConfig(max_new_tokens=6, temperature=2.0, top_k=20, top_p=1.0)
G = 2
TINY = ["model.num_layers=2", "audio.num_layers=1", "model.d_model=64", "model.mlp_dim=128",
        "model.num_heads=2", "model.num_kv_heads=2"]  # 2 kv heads: tensor-parallel over 2


@pytest.fixture(scope="module")
def setup():
    config = load_config("cpu-tiny", TINY)
    model = UnifiedAudioLM(config)
    boxed = backbone_init(model, config)
    init = jax.jit(boxed)  # eager flax init of the scanned stack is far slower
    params = unbox(init(jax.random.key(0)))
    other = unbox(init(jax.random.key(1)))
    pad = VocabLayout.from_model_config(config.model).pad_id
    prompts = np.array([[1, 2, 3, 4, pad], [5, 6, 7, pad, pad]], np.int32)
    lengths = np.array([4, 3], np.int32)
    return model, params, other, pad, prompts, lengths, boxed


def test_pack_rows_layout():
    rows = rollout.pack_rows(np.array([[7, 8, 0]]), np.array([2]), np.array([[4, 5, 6, 0]]),
                             np.array([3]), width=6, pad_id=0)
    np.testing.assert_array_equal(rows["tokens"], [[7, 8, 4, 5, 6, 0]])
    np.testing.assert_array_equal(rows["targets"], [[8, 4, 5, 6, 0, 0]])
    # position t predicts targets[t]: completion tokens 4, 5, 6 are predicted at t = 1, 2, 3
    np.testing.assert_array_equal(rows["mask"], [[0, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(rows["segment_ids"], [[1, 1, 1, 1, 1, 0]])
    with pytest.raises(ValueError, match="width: expected >= the longest"):
        rollout.pack_rows(np.array([[7, 8, 0]]), np.array([2]), np.array([[4, 5, 6, 0]]),
                          np.array([3]), width=4, pad_id=0)


def test_sample_groups_static_shapes_and_determinism(setup):
    model, params, _, pad, prompts, lengths, _ = setup
    a = rollout.sample(model, params, prompts, lengths, jax.random.key(3), SETTINGS, G)
    b = rollout.sample(model, params, prompts, lengths, jax.random.key(3), SETTINGS, G)
    c = rollout.sample(model, params, prompts, lengths, jax.random.key(4), SETTINGS, G)
    assert a.tokens.shape == (4, 6) and a.logprobs.shape == (4, 6) and a.mask.shape == (4, 6)
    np.testing.assert_array_equal(a.prompt_index, [0, 0, 1, 1])
    for x, y in ((a.tokens, b.tokens), (a.logprobs, b.logprobs), (a.mask, b.mask)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))


def test_stop_tokens_end_rows(setup):
    model, params, _, pad, prompts, lengths, _ = setup
    free = rollout.sample(model, params, prompts, lengths, jax.random.key(0), SETTINGS, G)
    first = int(np.asarray(free.tokens)[0, 1])  # stop on row 0's second token
    stopped = rollout.sample(model, params, prompts, lengths, jax.random.key(0), SETTINGS, G,
                             stop_tokens=(first,))
    assert int(stopped.lengths[0]) <= 2
    assert int(np.asarray(stopped.tokens)[0, int(stopped.lengths[0]) - 1]) == first
    assert np.all(np.asarray(stopped.tokens)[0, int(stopped.lengths[0]):] == pad)


def test_score_matches_rollout_logps_and_differs_by_params(setup):
    model, params, other, pad, prompts, lengths, _ = setup
    out = rollout.sample(model, params, prompts, lengths, jax.random.key(7), SETTINGS, G)
    rows = rollout.rollout_rows(out, prompts, lengths, width=10, pad_id=pad)
    policy = np.asarray(rollout.score(model, params, rows))
    # teacher-forced scoring reproduces the sampler's temperature-1 policy log-probs
    np.testing.assert_allclose(policy, rows["policy_logps"], atol=2e-5)
    np.testing.assert_allclose(policy.sum(-1), np.asarray(out.policy_logprobs).sum(-1),
                               atol=1e-4)
    assert np.all(policy[rows["mask"] == 0] == 0)
    # the sampler's own log-probs (temperature 2, top-k) are another distribution's
    valid = rows["mask"] > 0
    assert np.all(rows["sample_logps"][valid] <= 0)
    assert np.abs(rows["sample_logps"] - rows["policy_logps"])[valid].max() > 1e-3
    # same apply function, other params (a reference policy): other numbers, same mask
    reference = np.asarray(rollout.score(model, other, rows))
    assert np.abs(reference - policy).max() > 1e-3
    assert np.all(reference[rows["mask"] == 0] == 0)


def test_value_head_starts_at_zero():
    p = value_head.init_value_head(jax.random.key(0), 16)
    v = value_head.values(p, jnp.ones((2, 3, 16)))
    assert v.shape == (2, 3) and float(jnp.abs(v).max()) == 0.0


def test_sharded_rollout_and_scores_equal_the_single_device_ones(setup):
    """Params on a (data 2, fsdp 2, tensor 2) mesh with their own shardings: the same rng gives
    the same tokens and log-probs as on one device; rows come back split over the batch axes,
    and the params are never copied whole onto one device."""
    model, params, _, pad, prompts, lengths, boxed = setup
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    # the setup's params (key 0), initialized into the trainer's shardings on the mesh
    backbone = Experiment(name="backbone", init_fn=lambda _: boxed(jax.random.key(0)),
                          loss_fn=lambda *_: None, train_iterator=lambda *_: None)
    sharded = init_params(load_config("cpu-tiny", TINY), backbone, mesh)
    split = [x for x in jax.tree.leaves(sharded) if not x.sharding.is_fully_replicated]
    assert split, "expected params split over the mesh"
    # 2 prompts x G = 4 rows: the rows split 4 ways over (data, fsdp); the 2 prompts do not
    # divide 4 ways and are replicated (the shapes of the tests above: no new single-device
    # compile)
    one = rollout.sample(model, params, prompts, lengths, jax.random.key(5), SETTINGS, G)
    many = rollout.sample(model, sharded, prompts, lengths, jax.random.key(5), SETTINGS, G)
    assert many.tokens.sharding.spec == jax.sharding.PartitionSpec(sharding.BATCH_AXES)
    assert set(many.tokens.sharding.device_set) == set(mesh.devices.flat)
    np.testing.assert_array_equal(np.asarray(many.tokens), np.asarray(one.tokens))
    np.testing.assert_array_equal(np.asarray(many.lengths), np.asarray(one.lengths))
    for name in ("logprobs", "policy_logprobs"):
        np.testing.assert_allclose(np.asarray(getattr(many, name)),
                                   np.asarray(getattr(one, name)), atol=2e-5)
    rows = rollout.rollout_rows(one, prompts, lengths, width=10, pad_id=pad)
    np.testing.assert_allclose(rollout.score(model, sharded, rows),
                               rollout.score(model, params, rows), atol=2e-5)


def test_on_policy_source_reuses_rollouts_and_resumes():
    made = []

    def make(params, index):
        made.append((params["w"], index))
        return {"x": np.full((2,), index)}

    src = OnPolicySource(make, updates_per_rollout=2)
    with pytest.raises(RuntimeError, match="no params received"):
        next(src)
    for w in range(4):
        src.receive({"w": np.float32(w)})
        next(src)
    assert made == [(0, 0), (2, 1)]  # a new rollout every 2 updates, from the latest params
    state = src.get_state()
    resumed = OnPolicySource(make, updates_per_rollout=2)
    resumed.set_state(state)
    resumed.receive({"w": np.float32(9)})
    assert int(next(resumed)["x"][0]) == 2 and made[-1] == (9, 2)
    # a resume in the middle of a cycle (3 batches handed out, k = 2) re-samples that cycle's
    # rollout (number 1) from the restored params, then moves on at the cycle's end
    mid = OnPolicySource(make, updates_per_rollout=2)
    mid.set_state({"index": 3})
    mid.receive({"w": np.float32(7)})
    assert int(next(mid)["x"][0]) == 1 and made[-1] == (7, 1)
    mid.receive({"w": np.float32(8)})
    assert int(next(mid)["x"][0]) == 2 and made[-1] == (8, 2)
    assert int(next(mid)["x"][0]) == 2  # the cycle's second update: no new rollout
    with pytest.raises(RuntimeError, match="no params received"):
        next(mid)  # params serve one batch only (the trainer donates them to the step after)
    # a source whose batches need no params (SFT) draws without them
    plain = OnPolicySource(lambda params, index: {"x": np.full((1,), index)}, needs_params=False)
    assert [int(next(plain)["x"][0]) for _ in range(3)] == [0, 1, 2]
