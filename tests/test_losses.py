"""chorus.model.losses.cross_entropy against optax, plain and label-smoothed, with its
gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from chorus.model.losses import cross_entropy


def _case(seed=0, b=3, length=7, vocab=11):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(b, length, vocab)).astype(np.float32) * 3
    targets = rng.integers(0, vocab, size=(b, length)).astype(np.int32)
    mask = (rng.random((b, length)) < 0.7).astype(np.float32)
    mask[0, 0] = 1.0
    return jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask)


def _reference(logits, targets, mask, eps):
    """optax: CE against (1 - eps) one-hot + eps / V, the masked mean in float64."""
    labels = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), eps)
    nll = np.asarray(optax.softmax_cross_entropy(logits, labels), np.float64)
    mask = np.asarray(mask, np.float64)
    return (nll * mask).sum() / mask.sum()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_cross_entropy_matches_optax(eps):
    logits, targets, mask = _case()
    loss, count = cross_entropy(logits, targets, mask, eps)
    assert float(count) == float(mask.sum())
    np.testing.assert_allclose(float(loss), _reference(logits, targets, mask, eps), rtol=1e-6)


def test_label_smoothing_changes_the_loss_and_its_gradient_is_right():
    logits, targets, mask = _case(seed=1)
    plain = float(cross_entropy(logits, targets, mask)[0])
    smoothed = float(cross_entropy(logits, targets, mask, 0.1)[0])
    assert abs(plain - smoothed) > 1e-2

    def f(x):
        return cross_entropy(x, targets, mask, 0.1)[0]

    check_grads(f, (logits,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)
    # the smoothed gradient per token: softmax - q, q = 0.9 one-hot + 0.1 / V (masked mean)
    q = 0.9 * jax.nn.one_hot(targets, logits.shape[-1]) + 0.1 / logits.shape[-1]
    expected = (jax.nn.softmax(logits) - q) * mask[..., None] / mask.sum()
    np.testing.assert_allclose(np.asarray(jax.grad(f)(logits)), np.asarray(expected),
                               atol=1e-7)
