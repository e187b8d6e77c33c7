"""`jax.jit` for codec code, with one switch for compile-bound runs.

CHORUS_CODEC_FAST_COMPILE=1 compiles with XLA backend optimization level 0: about half the
compile time and a few times slower execution, the right trade for tests and one-off CLI
calls whose cost is mostly compilation. Results agree to float rounding.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import jax

FAST_COMPILE_ENV = "CHORUS_CODEC_FAST_COMPILE"


def compiler_options() -> dict | None:
    if os.environ.get(FAST_COMPILE_ENV, "") == "1":
        return {"xla_backend_optimization_level": 0}
    return None


def jit(fun, **kwargs):
    """jax.jit(fun, **kwargs) with the current compiler options (read when called)."""
    return jax.jit(fun, compiler_options=compiler_options(), **kwargs)


@contextlib.contextmanager
def fast_compile() -> Iterator[None]:
    """Turns on fast compilation for jits created inside the block."""
    old = os.environ.get(FAST_COMPILE_ENV)
    os.environ[FAST_COMPILE_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(FAST_COMPILE_ENV, None)
        else:
            os.environ[FAST_COMPILE_ENV] = old
