"""A reward component holding a model: `backbone_logprob` scores whole completions with a
frozen backbone, against a NumPy log-softmax over an unpadded forward of each row alone."""

import jax
import numpy as np
import pytest

from chorus.config import ConfigError, load_config
from chorus.model.factory import backbone_init
from chorus.model.unified import UnifiedAudioLM
from chorus.rl.model_rewards import BackboneLogprob
from chorus.rl.rewards import RewardMix, RewardMixConfig, get_reward
from chorus.rl.task import Completion, Prompts
from chorus.training.state import unbox
from chorus.vocab import VocabLayout

TINY = ["model.num_layers=2", "audio.num_layers=1", "model.d_model=64", "model.mlp_dim=128",
        "model.num_heads=2", "model.num_kv_heads=1", "model.dtype=float32"]


def _reference(model, params, prompt: np.ndarray, completion: np.ndarray, average: bool):
    """Σ (or mean) over the completion of log softmax(logits)[next id], float64, one row."""
    row = np.concatenate([prompt, completion]).astype(np.int32)[None]
    n = row.shape[1]
    apply = jax.jit(lambda p, *a: model.apply({"params": p}, *a)["logits"])
    logits = np.asarray(apply(params, row, np.arange(n)[None], np.ones((1, n), np.int32))[0],
                        np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    p = len(prompt)
    picked = [logits[t, row[0, t + 1]] - logz[t] for t in range(p - 1, n - 1)]
    return np.mean(picked) if average else np.sum(picked)


def test_backbone_logprob_matches_a_numpy_reference():
    config = load_config("cpu-tiny", TINY)
    model = UnifiedAudioLM(config)
    params = unbox(jax.jit(backbone_init(model, config))(jax.random.key(3)))
    layout = VocabLayout.from_model_config(config.model)
    pad = layout.pad_id
    prompts = Prompts(np.array([[1, 2, 3, pad], [4, 5, 6, 7], [8, 9, pad, pad]]),
                      np.array([3, 4, 2]), ("", "", ""))
    answers = [np.array([11, 12, layout.eos_id]), np.array([13]),
               np.array([14, 15, 16, 17, 18])]
    completions = [Completion.from_ids(a, "", layout) for a in answers]
    for average in (True, False):
        got = BackboneLogprob(model, params, average)(prompts, completions)
        want = [_reference(model, params, prompts.ids[i, :prompts.lengths[i]], answers[i],
                           average) for i in range(3)]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.shape == (3,) and np.all(got < 0)
    # a registered class: the mix builds it from the run config, and a missing run is an error
    assert get_reward("backbone_logprob") is BackboneLogprob
    mix = RewardMixConfig.from_mapping({"backbone_logprob": {"weight": 1.0}})
    with pytest.raises(ConfigError, match="rewards.backbone_logprob.run"):
        RewardMix(mix, config)
