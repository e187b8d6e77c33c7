"""Reward registry, mixes with normalization, and the built-in text rewards."""

import jiwer
import numpy as np
import pytest

from chorus.audio.text import normalize_text
from chorus.config import ConfigError
from chorus.rl.rewards import (
    RewardMixConfig,
    RewardTerm,
    available_rewards,
    compute_rewards,
    get_reward,
    register_reward,
)


@register_reward("test_len")
def _test_len(prompts, completions, **_):
    return np.array([len(c) for c in completions], float)


@register_reward("test_field")
def _test_field(prompts, completions, *, scores=None, scale=1.0, **_):
    return np.asarray(scores, float) * scale


@register_reward("test_bad_shape")
def _test_bad_shape(prompts, completions, **_):
    return np.zeros(len(completions) + 1)


def test_registry():
    assert {"exact_match", "neg_cer", "neg_wer", "length_penalty", "test_len"} <= set(
        available_rewards())
    assert get_reward("test_len") is _test_len
    with pytest.raises(KeyError, match="'nope'.*expected one of"):
        get_reward("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_len")(lambda p, c, **_: np.zeros(len(c)))
    with pytest.raises(ConfigError, match="rewards.speaker_simm: expected a registered reward"):
        RewardMixConfig.from_mapping({"test_len": 1.0, "speaker_simm": 0.5})


def test_mix_weights_components_and_normalizations():
    prompts = ["p"] * 6
    completions = ["a", "bbb", "cc", "dddddd", "e", "ffff"]
    scores = np.array([0.5, -1.0, 2.0, 0.0, 3.0, 1.0])
    lens = np.array([1, 3, 2, 6, 1, 4], float)
    spec = {"test_len": 1.0, "test_field": {"weight": 0.5, "scale": 2.0}}

    out = compute_rewards(RewardMixConfig.from_mapping(spec), prompts, completions, scores=scores)
    np.testing.assert_allclose(out.components["test_len"], lens)
    np.testing.assert_allclose(out.components["test_field"], 2 * scores)
    np.testing.assert_allclose(out.total, lens + 0.5 * 2 * scores)
    metrics = out.metrics()
    assert metrics["reward/total"] == pytest.approx(np.mean(lens + scores))
    assert metrics["reward/test_len"] == pytest.approx(lens.mean())

    z = lambda x: (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-6)
    batch = compute_rewards(RewardMixConfig.from_mapping(spec, "batch"), prompts, completions,
                            scores=scores)
    np.testing.assert_allclose(batch.total, z(lens) + 0.5 * z(2 * scores), rtol=1e-9)
    np.testing.assert_allclose(batch.components["test_len"], lens)  # raw still reported

    group = compute_rewards(RewardMixConfig.from_mapping(spec, "group", group_size=3), prompts,
                            completions, scores=scores)
    gz = lambda x: z(x.reshape(2, 3)).reshape(-1)
    np.testing.assert_allclose(group.total, gz(lens) + 0.5 * gz(2 * scores), rtol=1e-9)
    np.testing.assert_allclose(group.normalized["test_len"], gz(lens), rtol=1e-9)


def test_mix_errors():
    with pytest.raises(ValueError, match=r"'test_bad_shape': expected shape \(2,\), got \(3,\)"):
        compute_rewards(RewardMixConfig.from_mapping({"test_bad_shape": 1.0}), ["p", "q"],
                        ["a", "b"])
    with pytest.raises(ConfigError, match="prompts"):
        compute_rewards(RewardMixConfig.from_mapping({"test_len": 1.0}), ["p"], ["a", "b"])
    with pytest.raises(ConfigError, match="rewards.group_size"):
        RewardMixConfig.from_mapping({"test_len": 1.0}, "group")
    with pytest.raises(ConfigError, match="divisible by rewards.group_size=4"):
        compute_rewards(RewardMixConfig.from_mapping({"test_len": 1.0}, "group", 4), ["p"] * 6,
                        ["a"] * 6)
    with pytest.raises(ConfigError, match="rewards.normalization"):
        RewardMixConfig((RewardTerm("test_len", 1.0),), normalization="zscore")
    with pytest.raises(ConfigError, match="rewards.test_field.*'weight'"):
        RewardMixConfig.from_mapping({"test_field": {"scale": 2.0}})
    with pytest.raises(ValueError, match=r"\['scale'\] given both"):
        compute_rewards(RewardMixConfig.from_mapping({"test_field": {"weight": 1, "scale": 2}}),
                        ["p"], ["a"], scores=[1.0], scale=3.0)


def test_text_rewards_against_jiwer():
    refs = ["Hello, World!", "the cat sat on the mat", "Good morning, it's 7", ""]
    hyps = ["hello world", "the cat sat on a hat", "good evening its seven everyone", ""]
    norm_refs = [normalize_text(r) for r in refs]
    norm_hyps = [normalize_text(h) for h in hyps]
    assert norm_refs[0] == "hello world" and norm_refs[2] == "good morning its seven"
    mix = RewardMixConfig.from_mapping({"exact_match": 1.0, "neg_cer": 1.0, "neg_wer": 1.0})
    out = compute_rewards(mix, [""] * 4, hyps, references=refs)
    np.testing.assert_array_equal(out.components["exact_match"], [1.0, 0.0, 0.0, 1.0])
    want_cer = [-jiwer.cer(r, h) for r, h in zip(norm_refs[:3], norm_hyps[:3], strict=True)]
    want_wer = [-jiwer.wer(r, h) for r, h in zip(norm_refs[:3], norm_hyps[:3], strict=True)]
    np.testing.assert_allclose(out.components["neg_cer"], want_cer + [0.0])
    np.testing.assert_allclose(out.components["neg_wer"], want_wer + [0.0])
    assert want_wer[1] == pytest.approx(-2 / 6)
    # A custom normalizer is used as given; an empty reference with output scores -1.
    upper = get_reward("exact_match")([""], ["ABC"], references=["abc"], normalize=str.upper)
    np.testing.assert_array_equal(upper, [1.0])
    np.testing.assert_array_equal(get_reward("neg_cer")([""], ["x"], references=["?"]), [-1.0])
    with pytest.raises(ValueError, match="expected a `references` field"):
        get_reward("neg_wer")([""], ["a"])
    with pytest.raises(ValueError, match=r"text in completions\[0\], got list"):
        get_reward("neg_cer")([""], [[1, 2]], references=["a"])


def test_length_penalty():
    mix = RewardMixConfig.from_mapping({"length_penalty": {"weight": 2.0, "max_length": 4}})
    out = compute_rewards(mix, ["", "", ""], ["abc", "abcdef", [1, 2, 3, 4, 5, 6, 7, 8]])
    np.testing.assert_allclose(out.components["length_penalty"], [0.0, -0.5, -1.0])
    np.testing.assert_allclose(out.total, [0.0, -1.0, -2.0])
    with pytest.raises(ValueError, match="positive int max_length"):
        compute_rewards(RewardMixConfig.from_mapping({"length_penalty": 1.0}), [""], ["a"])
