"""Generic RL pieces the TTS task needs, on the symbol task and a random backbone: a task's
`allowed_ids` honoured by rollouts, and DPO on pairs sampled from the reference policy (best
vs worst of N by the reward mix, with a margin; prompts without a gap dropped, counted and
masked)."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone

from chorus.config import ConfigError, load_config, settings_from
from chorus.rl import rollout
from chorus.rl.algorithms import get_algorithm
from chorus.rl.dpo import DPOConfig, preference_loss, sampled_pairs
from chorus.rl.engine import RolloutEngine, _take_row
from chorus.rl.rewards import register_reward
from chorus.rl.task import allowed_ids
from chorus.vocab import VocabLayout
from experiments import rl_tasks

TINY = ["model.num_layers=1", "audio.num_layers=1", "model.d_model=32", "model.mlp_dim=64",
        "model.num_heads=2", "model.num_kv_heads=1", "train.batch_size=4",
        "experiment.task=copy", "experiment.temperature=2.0"]


@register_reward("test_count_a", replace=True)
def count_a(prompts, completions, **_):
    """How many "a" symbols the answer holds: varies between random samples."""
    return np.array([c.text.count("a") for c in completions], np.float64)


@register_reward("test_constant", replace=True)
def constant(prompts, completions, **_):
    return np.zeros(len(completions))


class MaskedSymbolTask(rl_tasks.SymbolTask):
    """The symbol task whose rollouts may sample only the 10 symbols and <eos>."""

    def __init__(self, settings, layout):
        super().__init__(settings, layout)
        mask = np.zeros(layout.size, bool)
        mask[rl_tasks.SYMBOL_BASE:rl_tasks.SYMBOL_BASE + 10] = True
        mask[layout.eos_id] = True
        self.allowed_ids = mask


def _engine(task_cls, *overrides, group=1):
    config = load_config("cpu-tiny", [*TINY, *overrides])
    settings = settings_from(rl_tasks.SymbolRLSettings, config.experiment)
    task = task_cls(settings, VocabLayout.from_model_config(config.model))
    model, params = random_backbone(config)
    return RolloutEngine(config, settings, task, group), settings, params


def _row_ids(rows, prefix=""):
    """Each row's completion ids, read back off the packed layout (targets under the mask)."""
    return [t[m > 0] for t, m in zip(rows[prefix + "targets"], rows[prefix + "mask"],
                                     strict=True)]


# ----------------------------------------------------------------------------- allowed ids


def test_rollouts_sample_only_the_tasks_allowed_ids():
    engine, _, policy = _engine(MaskedSymbolTask, group=2)
    allowed = engine.task.allowed_ids
    prompts = engine.task.prompts("train", np.random.default_rng(0), 4)  # the DPO tests' shape
    rows = engine.rollout(policy, prompts, jax.random.key(0), engine.sampling, 2).rows
    ids = np.concatenate(_row_ids(rows))
    assert ids.size > 4 and allowed[ids].all(), ids[~allowed[ids]]
    # the same rollout without the mask leaves the allowed set (temperature 2, random weights)
    free, _, _ = _engine(rl_tasks.SymbolTask, group=2)
    assert free.allowed_ids is None
    ids = np.concatenate(_row_ids(free.rollout(policy, prompts, jax.random.key(0),
                                               free.sampling, 2).rows))
    assert not allowed[ids].all()


def test_a_bad_allowed_ids_mask_is_one_clear_error():
    engine, settings, _ = _engine(MaskedSymbolTask)
    task, size = engine.task, engine.layout.size
    task.allowed_ids = np.ones(size - 1, bool)
    with pytest.raises(ValueError, match=r"allowed_ids: expected a bool mask of shape"):
        allowed_ids(task, size)
    task.allowed_ids = np.zeros(size, bool)
    with pytest.raises(ValueError, match="at least one allowed id"):
        allowed_ids(task, size)
    mask = np.zeros(size, bool)
    mask[rl_tasks.SYMBOL_BASE] = True
    task.allowed_ids = mask
    with pytest.raises(ValueError, match="stop token"):
        allowed_ids(task, size)


# ----------------------------------------------------------------------------- pair selection


def _reference_pairs(rewards, samples, margin):
    """A plain loop over prompts: the first max vs the first min, kept at a gap >= margin."""
    keep, best, worst = [], [], []
    for i in range(len(rewards) // samples):
        group = list(rewards[i * samples:(i + 1) * samples])
        b, w = group.index(max(group)), group.index(min(group))
        if group[b] - group[w] >= margin:
            keep.append(i)
            best.append(i * samples + b)
            worst.append(i * samples + w)
    return keep, best, worst


def test_sampled_pairs_match_a_reference_loop():
    rng = np.random.default_rng(0)
    rewards = np.round(rng.normal(size=40), 1)  # rounded: ties and exact-margin gaps occur
    rewards[8:12] = 0.5  # a constant group
    for margin in (0.1, 0.5, 1.5):
        got = sampled_pairs(rewards, 4, margin)
        for g, ref in zip(got, _reference_pairs(rewards, 4, margin), strict=True):
            np.testing.assert_array_equal(g, ref)
    assert 2 not in sampled_pairs(rewards, 4, 0.1)[0]
    with pytest.raises(ValueError, match=r"rewards: expected \[n \* 3\]"):
        sampled_pairs(rewards, 3, 0.1)


def test_dpo_config_checks_the_sampled_pair_keys():
    assert DPOConfig().pairs == "reference"
    config = load_config("cpu-tiny", [*TINY, "experiment.algo=dpo", "experiment.dpo.pairs=sampled",
                                      "experiment.dpo.samples=2",
                                      "experiment.reward_normalization=group"])
    settings = settings_from(rl_tasks.SymbolRLSettings, config.experiment)
    with pytest.raises(ConfigError, match=r"experiment.group_size: expected = experiment.dpo"):
        get_algorithm("dpo")(settings)  # z-scores over groups of 4 rows; a prompt has 2
    get_algorithm("dpo")(dataclasses.replace(settings, dpo=DPOConfig(pairs="sampled",
                                                                     samples=4)))
    for bad, match in (({"pairs": "online"}, "dpo.pairs"), ({"samples": 1}, "dpo.samples"),
                       ({"margin": 0.0}, "dpo.margin"),
                       ({"refill_rounds": 0}, "dpo.refill_rounds")):
        with pytest.raises(ConfigError, match=match):
            DPOConfig(**bad)


def test_weighted_preference_loss_is_the_mean_over_the_kept_rows():
    rng = np.random.default_rng(1)
    logps = [jnp.asarray(rng.normal(size=6), jnp.float32) for _ in range(4)]
    w = jnp.asarray([1, 0, 1, 1, 0, 1], jnp.float32)
    kept = np.flatnonzero(np.asarray(w))
    cfg = DPOConfig(beta=0.5)
    loss, metrics = preference_loss(*logps, cfg, w)
    ref_loss, ref_metrics = preference_loss(*(x[kept] for x in logps), cfg)
    # fp32 sums of 4 terms: equal to a few ulps
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for k in ref_metrics:
        np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-6, atol=1e-7)
    # no kept row: loss 0 and no gradient
    grad = jax.grad(lambda c: preference_loss(c, *logps[1:], cfg, jnp.zeros(6))[0])(logps[0])
    assert float(preference_loss(*logps, cfg, jnp.zeros(6))[0]) == 0.0
    np.testing.assert_array_equal(grad, np.zeros(6))


def test_take_row_pads_to_the_pack_rows_layout():
    args = (np.array([[7, 8, 9, 0], [3, 4, 0, 0]]), np.array([3, 2]),
            np.array([[4, 5, 0], [6, 0, 0]]), np.array([2, 1]))
    narrow, wide = rollout.pack_rows(*args, 6, 0), rollout.pack_rows(*args, 9, 0)
    for r in range(2):
        got = _take_row(narrow, r, 9, 0)
        for k in rollout.ROW_KEYS:
            np.testing.assert_array_equal(got[k], wide[k][r:r + 1], err_msg=k)


# ----------------------------------------------------------------------------- DPO batches


def _dpo_batch(reward, **dpo):
    engine, settings, policy = _engine(
        MaskedSymbolTask, f"experiment.rewards={{{reward}: 1.0}}",
        *(f"experiment.dpo.{k}={v}" for k, v in {"pairs": "sampled", **dpo}.items()))
    algo = get_algorithm("dpo")(settings)
    batch = algo.batch(engine, {"policy": policy, "reference": policy}, 0)
    return engine, algo, policy, batch


def test_sampled_pairs_prefer_the_higher_reward_by_the_margin():
    engine, algo, policy, batch = _dpo_batch("test_count_a", samples=2, margin=1.0)
    n = engine.num_prompts
    assert batch["chosen_tokens"].shape[0] == batch["rejected_tokens"].shape[0] == n
    kept = batch["pair_weight"] > 0
    assert kept.sum() >= 2, batch["pair_weight"]  # random samples: "a" counts differ
    np.testing.assert_allclose(batch["pairs/kept"], kept.mean())
    # the rewards recomputed from the rows themselves (ground truth: the decoded ids)
    reward = {name: np.array([engine.task.decode(ids).text.count("a")
                              for ids in _row_ids(batch, f"{name}_")])
              for name in ("chosen", "rejected")}
    np.testing.assert_array_equal(reward["chosen"][kept], batch["pairs/chosen_reward"][kept])
    np.testing.assert_array_equal(reward["rejected"][kept],
                                  batch["pairs/rejected_reward"][kept])
    assert (reward["chosen"][kept] - reward["rejected"][kept] >= 1.0).all()
    # both sides of a pair continue the same prompt
    for r in np.flatnonzero(kept):
        p = int(batch["chosen_mask"][r].argmax())
        np.testing.assert_array_equal(batch["chosen_tokens"][r, :p + 1],
                                      batch["rejected_tokens"][r, :p + 1])
    loss, metrics = algo.loss(engine.model, {"policy": policy}, batch)
    assert np.isfinite(float(loss)) and float(metrics["pairs/gap"]) >= 1.0
    # the reference is the policy here: every implicit reward is 0, the sigmoid loss log 2
    np.testing.assert_allclose(float(loss), np.log(2.0), rtol=1e-5)


def test_a_constant_reward_yields_no_pairs_counted_and_masked():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine, algo, policy, batch = _dpo_batch("test_constant", samples=2, refill_rounds=3)
    n = engine.num_prompts
    assert any("none of 12 prompts had a reward gap" in str(w.message) for w in caught)
    np.testing.assert_array_equal(batch["pair_weight"], np.zeros(n))
    np.testing.assert_array_equal(batch["pairs/kept"], np.zeros(n))
    np.testing.assert_array_equal(batch["pairs/dropped"], np.full(n, 3 * n))
    # every row masked: loss 0 (and no gradient: test_weighted_preference_loss_...)
    assert float(algo.loss(engine.model, {"policy": policy}, batch)[0]) == 0.0


def test_reference_pairs_stay_the_default():
    engine, settings, policy = _engine(MaskedSymbolTask)
    assert settings.dpo == dataclasses.replace(DPOConfig())
    batch = get_algorithm("dpo")(settings).batch(
        engine, {"policy": policy, "reference": policy}, 0)
    assert "pair_weight" not in batch
    answers, _ = engine.task.answers(engine.task.prompts(
        "train", engine.rng(2, 0), engine.num_prompts).references)
    chosen = _row_ids(batch, "chosen_")
    for row, ans in zip(chosen, answers, strict=True):
        np.testing.assert_array_equal(row, ans[:len(row)])
