"""Reward registry (functions and model-holding classes), mixes with normalization, and the
built-in text rewards."""

import jiwer
import numpy as np
import pytest

from chorus.audio.text import normalize_text
from chorus.config import ConfigError
from chorus.rl.rewards import (
    RewardMix,
    RewardMixConfig,
    RewardTerm,
    available_rewards,
    get_reward,
    register_reward,
)
from chorus.rl.task import Completion


def texts(*values):
    return [Completion(np.arange(len(v), dtype=np.int32), v, np.zeros(0, np.int32))
            for v in values]


def compute(spec, prompts, completions, normalization="none", group_size=None, **fields):
    mix = RewardMixConfig.from_mapping(spec, normalization, group_size=group_size)
    return RewardMix(mix)(prompts, completions, **fields)


@register_reward("test_len")
def _test_len(prompts, completions, **_):
    return np.array([len(c.text) for c in completions], float)


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
    completions = texts("a", "bbb", "cc", "dddddd", "e", "ffff")
    scores = np.array([0.5, -1.0, 2.0, 0.0, 3.0, 1.0])
    lens = np.array([1, 3, 2, 6, 1, 4], float)
    spec = {"test_len": 1.0, "test_field": {"weight": 0.5, "scale": 2.0}}

    out = compute(spec, prompts, completions, scores=scores)
    np.testing.assert_allclose(out.components["test_len"], lens)
    np.testing.assert_allclose(out.components["test_field"], 2 * scores)
    np.testing.assert_allclose(out.total, lens + 0.5 * 2 * scores)
    metrics = out.metrics()
    assert metrics["reward/total"] == pytest.approx(np.mean(lens + scores))
    assert metrics["reward/test_len"] == pytest.approx(lens.mean())

    z = lambda x: (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-6)
    batch = compute(spec, prompts, completions, "batch", scores=scores)
    np.testing.assert_allclose(batch.total, z(lens) + 0.5 * z(2 * scores), rtol=1e-9)
    np.testing.assert_allclose(batch.components["test_len"], lens)  # raw still reported

    group = compute(spec, prompts, completions, "group", 3, scores=scores)
    gz = lambda x: z(x.reshape(2, 3)).reshape(-1)
    np.testing.assert_allclose(group.total, gz(lens) + 0.5 * gz(2 * scores), rtol=1e-9)
    np.testing.assert_allclose(group.normalized["test_len"], gz(lens), rtol=1e-9)


def test_mix_errors():
    with pytest.raises(ValueError, match=r"'test_bad_shape': expected shape \(2,\), got \(3,\)"):
        compute({"test_bad_shape": 1.0}, ["p", "q"], texts("a", "b"))
    with pytest.raises(ConfigError, match="prompts"):
        compute({"test_len": 1.0}, ["p"], texts("a", "b"))
    with pytest.raises(ConfigError, match="rewards.group_size"):
        RewardMixConfig.from_mapping({"test_len": 1.0}, "group")
    with pytest.raises(ConfigError, match="divisible by rewards.group_size=4"):
        compute({"test_len": 1.0}, ["p"] * 6, texts(*"abcdef"), "group", 4)
    with pytest.raises(ConfigError, match="rewards.normalization"):
        RewardMixConfig((RewardTerm("test_len", 1.0),), normalization="zscore")
    with pytest.raises(ConfigError, match="rewards.test_field.*'weight'"):
        RewardMixConfig.from_mapping({"test_field": {"scale": 2.0}})
    with pytest.raises(ValueError, match=r"\['scale'\] given both"):
        compute({"test_field": {"weight": 1, "scale": 2}}, ["p"], texts("a"), scores=[1.0],
                scale=3.0)


def test_text_rewards_against_jiwer():
    refs = ["Hello, World!", "the cat sat on the mat", "Good morning, it's 7", ""]
    hyps = ["hello world", "the cat sat on a hat", "good evening its seven everyone", ""]
    norm_refs = [normalize_text(r) for r in refs]
    norm_hyps = [normalize_text(h) for h in hyps]
    assert norm_refs[0] == "hello world" and norm_refs[2] == "good morning its seven"
    out = compute({"exact_match": 1.0, "neg_cer": 1.0, "neg_wer": 1.0}, [""] * 4, texts(*hyps),
                  references=refs)
    np.testing.assert_array_equal(out.components["exact_match"], [1.0, 0.0, 0.0, 1.0])
    want_cer = [-jiwer.cer(r, h) for r, h in zip(norm_refs[:3], norm_hyps[:3], strict=True)]
    want_wer = [-jiwer.wer(r, h) for r, h in zip(norm_refs[:3], norm_hyps[:3], strict=True)]
    np.testing.assert_allclose(out.components["neg_cer"], want_cer + [0.0])
    np.testing.assert_allclose(out.components["neg_wer"], want_wer + [0.0])
    assert want_wer[1] == pytest.approx(-2 / 6)
    # A custom normalizer is used as given; an empty reference with output scores -1.
    upper = get_reward("exact_match")([""], texts("ABC"), references=["abc"],
                                      normalize=str.upper)
    np.testing.assert_array_equal(upper, [1.0])
    np.testing.assert_array_equal(get_reward("neg_cer")([""], texts("x"), references=["?"]),
                                  [-1.0])
    with pytest.raises(ValueError, match="expected a `references` field"):
        get_reward("neg_wer")([""], texts("a"))
    with pytest.raises(ValueError, match=r"a Completion in completions\[0\], got str"):
        get_reward("neg_cer")([""], ["a"], references=["a"])


def test_length_penalty_counts_completion_ids():
    out = compute({"length_penalty": {"weight": 2.0, "max_length": 4}}, ["", "", ""],
                  texts("abc", "abcdef", "ab" * 4))
    np.testing.assert_allclose(out.components["length_penalty"], [0.0, -0.5, -1.0])
    np.testing.assert_allclose(out.total, [0.0, -1.0, -2.0])
    with pytest.raises(ValueError, match="positive int max_length"):
        compute({"length_penalty": 1.0}, [""], texts("a"))


@register_reward("test_scaled_len")
class _ScaledLength:
    """A component built once from the run config: holds state (here a scale) across calls."""

    builds = 0

    def __init__(self, scale):
        self.scale = scale

    @classmethod
    def build(cls, config, *, factor=1.0):
        cls.builds += 1
        return cls(config["scale"] * factor)

    def __call__(self, prompts, completions, **_):
        return self.scale * np.array([len(c.text) for c in completions], float)


def test_reward_classes_are_built_once_with_the_mix_kwargs():
    mix = RewardMixConfig.from_mapping({"test_scaled_len": {"weight": 1.0, "factor": 3.0},
                                        "test_len": 1.0})
    built = RewardMix(mix, {"scale": 2.0})
    before = _ScaledLength.builds
    for _ in range(2):
        out = built(["p", "q"], texts("ab", "abcd"))
        np.testing.assert_allclose(out.components["test_scaled_len"], [12.0, 24.0])
    assert _ScaledLength.builds == before  # built in RewardMix, not per call
    assert out.metrics()["reward/test_scaled_len"] == pytest.approx(18.0)
    with pytest.raises(ConfigError, match="rewards.test_scaled_len.*expected a config"):
        RewardMix(mix)
    with pytest.raises(TypeError, match="classmethod build"):
        register_reward("test_no_build")(type("NoBuild", (), {"__call__": lambda *a: 0}))
