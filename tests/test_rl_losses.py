"""RL losses against the REFERENCES.md golden values, NumPy re-implementations, a plain-Python
GAE loop and float64 finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chorus.config import ConfigError
from chorus.rl.dpo import DPOConfig, dpo_loss, preference_loss
from chorus.rl.grpo import GRPOConfig, group_advantages, grpo_loss
from chorus.rl.logprobs import completion_logps, sequence_logprobs, token_entropy
from chorus.rl.masked import aggregate
from chorus.rl.ppo import PPOConfig, clipped_value_loss, gae, kl_shaped_rewards, ppo_loss

# ----------------------------------------------------------------------------- DPO golden


def _golden_inputs():
    np.random.seed(0)
    logp = np.random.normal(0, 5, (8, 4))  # rows 0-3 chosen, 4-7 rejected
    ref_tokens = np.random.normal(0, 5, (8, 4))
    return logp, ref_tokens


GOLDEN = [  # REFERENCES.md, "Preference / RL losses"
    (DPOConfig(beta=0.1), 0.753059),
    (DPOConfig(beta=0.1, label_smoothing=0.3), 0.925447),
    (DPOConfig(beta=0.1, loss_type="hinge"), 0.948953),
    (DPOConfig(beta=0.1, loss_type="ipo"), 31.380279),
]


@pytest.mark.parametrize("config,expected", GOLDEN, ids=["sigmoid", "smoothed", "hinge", "ipo"])
def test_dpo_golden_from_token_logps(config, expected):
    logp, ref = (x.astype(np.float32) for x in _golden_inputs())
    mask = jnp.ones((4, 4))
    loss, _ = dpo_loss(logp[:4], logp[4:], ref[:4], ref[4:], mask, mask, config)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(float(loss), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("config,expected", GOLDEN[:3], ids=["sigmoid", "smoothed", "hinge"])
def test_dpo_golden_from_summed_logps(config, expected):
    # The recipe as written: policy summed over tokens, ref = normal(0,5,(8,4)).sum(-1).
    logp, ref_tokens = _golden_inputs()
    seq, ref = logp.sum(-1).astype(np.float32), ref_tokens.sum(-1).astype(np.float32)
    loss, _ = preference_loss(seq[:4], seq[4:], ref[:4], ref[4:], config)
    np.testing.assert_allclose(float(loss), expected, rtol=0, atol=1e-5)


def test_dpo_metrics_and_masking():
    logp, ref = (x.astype(np.float32) for x in _golden_inputs())
    # Extra padded tokens carrying garbage must not change anything.
    pad = np.full((8, 3), 123.0, np.float32)
    logp_p, ref_p = np.concatenate([logp, pad], 1), np.concatenate([ref, -pad], 1)
    mask = jnp.asarray(np.concatenate([np.ones((4, 4)), np.zeros((4, 3))], 1))
    cfg = DPOConfig(beta=0.1)
    loss, metrics = dpo_loss(logp_p[:4], logp_p[4:], ref_p[:4], ref_p[4:], mask, mask, cfg)
    np.testing.assert_allclose(float(loss), 0.753059, atol=1e-5)
    rc = 0.1 * (logp[:4].sum(-1) - ref[:4].sum(-1))
    rr = 0.1 * (logp[4:].sum(-1) - ref[4:].sum(-1))
    np.testing.assert_allclose(metrics["rewards/chosen"], rc.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["rewards/rejected"], rr.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["rewards/margin"], (rc - rr).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["rewards/accuracy"], np.mean(rc > rr))


def test_dpo_config_validation():
    with pytest.raises(ConfigError, match="dpo.beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(ConfigError, match="dpo.loss_type.*'kto'"):
        DPOConfig(loss_type="kto")
    with pytest.raises(ConfigError, match="dpo.label_smoothing"):
        DPOConfig(loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="ref_chosen_token_logps"):
        m = jnp.ones((2, 3))
        dpo_loss(m, m, jnp.ones((2, 4)), m, m, m, DPOConfig())


# ----------------------------------------------------------------------------- log-probs


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_sequence_logprobs_and_entropy_match_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32) * 3
    targets = rng.integers(0, 7, (3, 5))
    mask = (rng.random((3, 5)) > 0.3).astype(np.float32)
    lsm = _np_log_softmax(logits.astype(np.float64))
    want = np.take_along_axis(lsm, targets[..., None], -1)[..., 0] * mask
    got = sequence_logprobs(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ent = -(np.exp(lsm) * lsm).sum(-1)
    np.testing.assert_allclose(token_entropy(jnp.asarray(logits)), ent, rtol=1e-5, atol=1e-5)
    # bf16 logits are computed in fp32.
    assert sequence_logprobs(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets)).dtype \
        == jnp.float32
    np.testing.assert_allclose(completion_logps(got, jnp.asarray(mask), average=True),
                               want.sum(-1) / np.maximum(mask.sum(-1), 1), rtol=1e-5)


# ----------------------------------------------------------------------------- GRPO


def test_rloo_golden():
    adv = group_advantages(jnp.arange(1.0, 7.0), 3, baseline="rloo", normalize_std=False)
    np.testing.assert_allclose(adv, [-1.5, 0, 1.5, -1.5, 0, 1.5], atol=1e-6)


def test_group_advantages_match_numpy():
    rng = np.random.default_rng(2)
    r = rng.normal(size=12).astype(np.float32)
    g = r.reshape(3, 4)
    loo = g - (g.sum(-1, keepdims=True) - g) / 3
    std = g.std(-1, ddof=1, keepdims=True) + 1e-6
    cases = {("mean", False): g - g.mean(-1, keepdims=True),
             ("mean", True): (g - g.mean(-1, keepdims=True)) / std,
             ("rloo", False): loo, ("rloo", True): loo / std}
    for (baseline, norm), want in cases.items():
        got = group_advantages(jnp.asarray(r), 4, baseline=baseline, normalize_std=norm)
        np.testing.assert_allclose(got, want.reshape(-1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="divisible by group_size=5"):
        group_advantages(jnp.asarray(r), 5)


def _np_grpo(logp, old, ref, adv, mask, cfg):
    ratio = np.exp(logp - old)
    a = adv[:, None]
    pg = -np.minimum(ratio * a, np.clip(ratio, 1 - cfg.clip_eps_low, 1 + cfg.clip_eps_high) * a)
    d = ref - logp
    kl = d * -1 if cfg.kl_estimator == "k1" else np.exp(d) - d - 1
    tok = pg + cfg.kl_coef * kl
    if cfg.aggregation == "seq_mean_token_mean":
        loss = np.mean((tok * mask).sum(-1) / mask.sum(-1))
    elif cfg.aggregation == "token_mean":
        loss = (tok * mask).sum() / mask.sum()
    else:
        loss = (tok * mask).sum() / (mask.shape[0] * (cfg.max_len or mask.shape[1]))
    clipped = ((a > 0) & (ratio > 1 + cfg.clip_eps_high)) | (
        (a < 0) & (ratio < 1 - cfg.clip_eps_low))
    return loss, (clipped * mask).sum() / mask.sum(), (kl * mask).sum() / mask.sum()


def _grpo_inputs(seed=3, dtype=np.float32):
    rng = np.random.default_rng(seed)
    b, length = 6, 7
    logp = rng.normal(-2, 1, (b, length))
    old = logp + rng.normal(0, 0.3, (b, length))  # ratios well outside the clip range
    ref = logp + rng.normal(0, 0.5, (b, length))
    lengths = np.array([7, 3, 5, 1, 6, 4])
    mask = (np.arange(length)[None] < lengths[:, None]).astype(dtype)
    adv = np.abs(rng.normal(size=b)) * np.array([1, -1, 1, -1, -1, 1])  # both signs clip
    return [x.astype(dtype) for x in (logp, old, ref, adv)] + [mask]


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean", "dr_grpo"])
@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_grpo_loss_matches_numpy(aggregation, estimator):
    logp, old, ref, adv, mask = _grpo_inputs()
    cfg = GRPOConfig(clip_eps_low=0.1, clip_eps_high=0.3, kl_coef=0.1, kl_estimator=estimator,
                     aggregation=aggregation, max_len=10 if aggregation == "dr_grpo" else None)
    loss, metrics = grpo_loss(*(jnp.asarray(x) for x in (logp, old, ref, adv, mask)), cfg)
    want, clip_frac, kl = _np_grpo(*(x.astype(np.float64) for x in (logp, old, ref, adv, mask)),
                                   cfg)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["clip_fraction"], clip_frac, rtol=1e-6)
    assert 0 < float(metrics["clip_fraction"]) < 1  # the clip is exercised
    np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5, atol=1e-6)


def test_grpo_on_policy_gradient_is_advantage_weighted_logp_gradient():
    # old_logps=None: ratio ≡ 1, so ∂loss/∂logp[b,t] = −A_b·mask[b,t] / (n_b·B).
    logp, _, _, adv, mask = _grpo_inputs()
    cfg = GRPOConfig(kl_coef=0.0)
    grad = jax.grad(lambda x: grpo_loss(x, None, None, jnp.asarray(adv), jnp.asarray(mask),
                                        cfg)[0])(jnp.asarray(logp))
    want = -adv[:, None] * mask / (mask.sum(-1, keepdims=True) * mask.shape[0])
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


def test_grpo_jits_and_validates():
    logp, old, ref, adv, mask = (jnp.asarray(x) for x in _grpo_inputs())
    cfg = GRPOConfig()
    eager, _ = grpo_loss(logp, old, ref, adv, mask, cfg)
    jitted, _ = jax.jit(lambda *a: grpo_loss(*a, cfg))(logp, old, ref, adv, mask)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    with pytest.raises(ConfigError, match="grpo.baseline"):
        GRPOConfig(baseline="median")
    with pytest.raises(ConfigError, match="grpo.aggregation"):
        GRPOConfig(aggregation="sum")
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logp, old, None, adv, mask, GRPOConfig(kl_coef=0.1))
    with pytest.raises(ConfigError, match="max_len"):
        aggregate(logp, mask, "dr_grpo", max_len=3)


# ----------------------------------------------------------------------------- PPO / GAE


def _gae_loop(rewards, values, mask, dones, bootstrap, gamma, lam):
    b, length = rewards.shape
    adv = np.zeros((b, length))
    for i in range(b):
        next_v, next_a = bootstrap[i], 0.0
        for t in reversed(range(length)):
            if not mask[i, t]:
                continue
            cont = 0.0 if dones[i, t] else 1.0
            delta = rewards[i, t] + gamma * cont * next_v - values[i, t]
            adv[i, t] = delta + gamma * lam * cont * next_a
            next_v, next_a = values[i, t], adv[i, t]
    return adv


def test_gae_matches_python_loop():
    rng = np.random.default_rng(4)
    b, length = 4, 9
    rewards, values = rng.normal(size=(b, length)), rng.normal(size=(b, length))
    mask = np.ones((b, length), bool)
    mask[0, :3] = False  # prompt tokens
    mask[1, 6:] = False  # right padding
    mask[2, [2, 5]] = False  # holes (e.g. observation tokens) are skipped
    dones = np.zeros((b, length), bool)
    dones[3, 4] = True  # two packed episodes in row 3
    dones[1, 5] = True
    bootstrap = np.array([0.0, 0.7, -0.4, 1.3])  # row 1 ends done: its bootstrap is unused
    gamma, lam = 0.97, 0.9
    want = _gae_loop(rewards, values, mask, dones, bootstrap, gamma, lam)
    adv, ret = gae(*(jnp.asarray(x, jnp.float32) for x in (rewards, values)), jnp.asarray(mask),
                   gamma, lam, jnp.asarray(dones), jnp.asarray(bootstrap, jnp.float32))
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, (want + values) * mask, rtol=1e-5, atol=1e-5)
    # γ = λ = 1, one reward at the end, zero values: every advantage is that reward.
    r = np.zeros((1, 5))
    r[0, -1] = 2.0
    adv1, _ = gae(jnp.asarray(r), jnp.zeros((1, 5)), jnp.ones((1, 5)), 1.0, 1.0)
    np.testing.assert_allclose(adv1, np.full((1, 5), 2.0))


def test_kl_shaped_rewards():
    logp = jnp.asarray([[-1.0, -2.0, -0.5, 0.0], [-1.0, -1.5, 0.0, 0.0]])
    ref = jnp.asarray([[-1.5, -1.0, -0.5, 0.0], [-0.5, -1.0, 0.0, 0.0]])
    mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0]])
    rewards, kl = kl_shaped_rewards(jnp.asarray([3.0, -1.0]), logp, ref, mask, 0.1, "k1")
    want_kl = np.array([[0.5, -1.0, 0.0, 0.0], [-0.5, -0.5, 0.0, 0.0]])
    np.testing.assert_allclose(kl, want_kl, atol=1e-6)
    want = -0.1 * want_kl
    want[0, 2] += 3.0
    want[1, 1] += -1.0
    np.testing.assert_allclose(rewards, want, atol=1e-6)


def _ppo_inputs(dtype=np.float32):
    rng = np.random.default_rng(5)
    b, length, vocab = 3, 5, 6
    logits = rng.normal(size=(b, length, vocab)) * 2
    logp = rng.normal(-1.5, 0.5, (b, length))
    old = logp + rng.normal(0, 0.3, (b, length))
    adv, ret = rng.normal(size=(b, length)), rng.normal(size=(b, length))
    values = rng.normal(size=(b, length))
    old_values = values + rng.normal(0, 0.4, (b, length))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0]], dtype)
    return [x.astype(dtype) for x in (logp, old, adv, ret, values, old_values)] + [
        mask, logits.astype(dtype)]


def test_ppo_loss_matches_numpy():
    logp, old, adv, ret, v, v_old, mask, logits = _ppo_inputs()
    cfg = PPOConfig(clip_eps=0.2, value_clip=0.2, value_coef=0.5, entropy_coef=0.01)
    loss, metrics = ppo_loss(*(jnp.asarray(x) for x in (logp, old, adv, ret, v, v_old, mask)),
                             cfg, logits=jnp.asarray(logits))
    f = lambda x: x.astype(np.float64)
    ratio = np.exp(f(logp) - f(old))
    pg = -np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
    v_clip = np.clip(f(v), v_old - 0.2, v_old + 0.2)
    vf = 0.5 * np.maximum((v - ret) ** 2, (v_clip - ret) ** 2)
    lsm = _np_log_softmax(f(logits))
    ent = -(np.exp(lsm) * lsm).sum(-1)
    tm = lambda x: (x * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(loss), tm(pg) + 0.5 * tm(vf) - 0.01 * tm(ent), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss/value"], tm(vf), rtol=1e-5)
    np.testing.assert_allclose(metrics["entropy"], tm(ent), rtol=1e-5)
    assert float(metrics["value_clip_fraction"]) > 0
    # The value loss helper on its own.
    np.testing.assert_allclose(clipped_value_loss(jnp.asarray(v), jnp.asarray(v_old),
                                                  jnp.asarray(ret), 0.2), vf, rtol=1e-5)
    with pytest.raises(ValueError, match="logits"):
        ppo_loss(*(jnp.asarray(x) for x in (logp, old, adv, ret, v, v_old, mask)), cfg)
    with pytest.raises(ConfigError, match="ppo.lam"):
        PPOConfig(lam=1.5)


# ----------------------------------------------------------------------------- gradients


def _check_grad_fd(fn, args, argnum, n_dirs=3, eps=1e-6, seed=0):
    """Directional derivatives of scalar `fn` vs central differences, all in float64."""
    rng = np.random.default_rng(seed)
    x = args[argnum]
    grad = np.asarray(jax.grad(fn, argnums=argnum)(*args))
    assert grad.dtype == np.float64 and np.any(grad != 0)
    for _ in range(n_dirs):
        d = rng.normal(size=x.shape)
        plus = list(args)
        minus = list(args)
        plus[argnum], minus[argnum] = x + eps * d, x - eps * d
        fd = (float(fn(*plus)) - float(fn(*minus))) / (2 * eps)
        np.testing.assert_allclose(np.sum(grad * d), fd, rtol=1e-6, atol=1e-8)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("config", [c for c, _ in GOLDEN], ids=["sigmoid", "smoothed", "hinge",
                                                                "ipo"])
def test_dpo_gradient_finite_differences(x64, config):
    # Through sequence_logprobs from logits, as a policy apply function would feed it.
    rng = np.random.default_rng(6)
    logits = jnp.asarray(rng.normal(size=(4, 5, 6)))
    targets = jnp.asarray(rng.integers(0, 6, (4, 5)))
    mask = jnp.asarray((np.arange(5)[None] < np.array([5, 3, 4, 2])[:, None]).astype(np.float64))
    ref = jnp.asarray(rng.normal(-1.8, 0.5, (4, 5)))
    cfg = DPOConfig(beta=2.0 if config.loss_type == "hinge" else 0.5, loss_type=config.loss_type,
                    label_smoothing=config.label_smoothing)

    def loss(lg):
        lp = sequence_logprobs(lg, targets, mask)
        return dpo_loss(lp[:2], lp[2:], ref[:2], ref[2:], mask[:2], mask[2:], cfg)[0]

    assert loss(logits).dtype == jnp.float64
    _check_grad_fd(loss, [logits], 0)


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean", "dr_grpo"])
def test_grpo_gradient_finite_differences(x64, aggregation):
    logp, old, ref, adv, mask = (jnp.asarray(x) for x in _grpo_inputs(dtype=np.float64))
    cfg = GRPOConfig(clip_eps_high=0.28, kl_coef=0.1, kl_estimator="k3",
                     aggregation=aggregation)
    _check_grad_fd(lambda x: grpo_loss(x, old, ref, adv, mask, cfg)[0], [logp], 0)


def test_ppo_gradient_finite_differences(x64):
    logp, old, adv, ret, v, v_old, mask, logits = (jnp.asarray(x)
                                                   for x in _ppo_inputs(np.float64))
    cfg = PPOConfig(entropy_coef=0.05, aggregation="seq_mean_token_mean")
    fn = lambda lp, val, lg: ppo_loss(lp, old, adv, ret, val, v_old, mask, cfg, logits=lg)[0]
    for argnum in range(3):
        _check_grad_fd(fn, [logp, v, logits], argnum)
