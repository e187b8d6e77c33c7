"""Params from another run for an RL run (`chorus rl --init-from RUN`, `experiment.init_from`).

The RL experiment takes its policy (and reference) from RUN's exported "backbone" and its
companions (frozen trees a task keeps, e.g. ASR's "mtp" and "ctc") from RUN's trees of the
same names: any run with a backbone (a `chorus train` run of a mode, the RL SFT warm-up, an RL
run). The mechanism is the mode-agnostic one of chorus.training.init_from (`preload` as the
experiment's before_init, `release` as its after_init, `pretrained` inside init_fn); its names
are re-exported here.
"""

from chorus.training.init_from import (  # noqa: F401  (re-exported)
    preload,
    pretrained,
    release,
    with_values,
)
