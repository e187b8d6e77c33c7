"""Rollouts (sampling through chorus.decoding.generate) and teacher-forced scoring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chorus.config import DecodeConfig, load_config
from chorus.model.unified import UnifiedAudioLM
from chorus.rl import rollout, value_head
from chorus.rl.experiment import OnPolicySource, _backbone_init
from chorus.training.partitioning import unbox
from chorus.vocab import VocabLayout

# One sampler configuration (and G) for every test: generate compiles once per static setting.
SETTINGS = DecodeConfig(max_new_tokens=6, temperature=2.0, top_k=20, top_p=1.0)
G = 2
TINY = ["model.num_layers=2", "audio.num_layers=1", "model.d_model=64", "model.mlp_dim=128",
        "model.num_heads=2", "model.num_kv_heads=1"]


@pytest.fixture(scope="module")
def setup():
    config = load_config("cpu-tiny", TINY)
    model = UnifiedAudioLM(config)
    init = _backbone_init(model, config)
    init = jax.jit(init)  # eager flax init of the scanned stack is far slower
    params = unbox(init(jax.random.key(0)))
    other = unbox(init(jax.random.key(1)))
    pad = VocabLayout.from_model_config(config.model).pad_id
    prompts = np.array([[1, 2, 3, 4, pad], [5, 6, 7, pad, pad]], np.int32)
    lengths = np.array([4, 3], np.int32)
    return model, params, other, pad, prompts, lengths


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
    model, params, _, pad, prompts, lengths = setup
    a = rollout.sample(model, params, prompts, lengths, jax.random.key(3), SETTINGS, G)
    b = rollout.sample(model, params, prompts, lengths, jax.random.key(3), SETTINGS, G)
    c = rollout.sample(model, params, prompts, lengths, jax.random.key(4), SETTINGS, G)
    assert a.tokens.shape == (4, 6) and a.logprobs.shape == (4, 6) and a.mask.shape == (4, 6)
    np.testing.assert_array_equal(a.prompt_index, [0, 0, 1, 1])
    for x, y in ((a.tokens, b.tokens), (a.logprobs, b.logprobs), (a.mask, b.mask)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))


def test_stop_tokens_end_rows(setup):
    model, params, _, pad, prompts, lengths = setup
    free = rollout.sample(model, params, prompts, lengths, jax.random.key(0), SETTINGS, G)
    first = int(np.asarray(free.tokens)[0, 1])  # stop on row 0's second token
    stopped = rollout.sample(model, params, prompts, lengths, jax.random.key(0), SETTINGS, G,
                             stop_tokens=(first,))
    assert int(stopped.lengths[0]) <= 2
    assert int(np.asarray(stopped.tokens)[0, int(stopped.lengths[0]) - 1]) == first
    assert np.all(np.asarray(stopped.tokens)[0, int(stopped.lengths[0]):] == pad)


def test_score_matches_rollout_logps_and_differs_by_params(setup):
    model, params, other, pad, prompts, lengths = setup
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
