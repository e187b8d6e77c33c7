"""Random-initialized backbones shared by the decoding and head tests (tests/ is on the path)."""

import functools

import jax

from chorus.config import Config
from chorus.model.factory import init_params


@functools.cache
def random_backbone(config: Config, seed: int = 0):
    """(model, params) of a random-initialized backbone, built once per (config, seed) and
    process: test modules share it instead of compiling the init again (jax arrays are
    immutable, so sharing is safe)."""
    model, params, _ = init_params(config, jax.random.key(seed))
    return model, params
