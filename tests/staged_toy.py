"""A two-stage experiment for the stage-runner tests (`--experiment staged_toy`, tests/ on the
path), on train_toy's regression MLP (it compiles in a second):

    pretrain   from scratch
    finetune   policy and frozen reference both initialized from pretrain's exported
               backbone, found at `experiment.run_dir`/pretrain; another learning rate. Read
               as any init from another run (chorus.training.init_from): preloaded by
               before_init on a fresh start only, released by after_init, and filled in by
               `pretrained` when the params are materialized; `build` reads nothing, so a
               finetune run loads without pretrain/

`experiment.batch_sleep` (seconds per batch) slows the data so a test can kill a stage in the
middle; `experiment.notes` (a file) is declared as the asset `notes.txt`. export_params maps
{policy, reference} to the inference tree {"backbone": policy}.
"""

import dataclasses
import os
import time

from train_toy import regression_experiment

from chorus.training.init_from import init_hooks, pretrained
from chorus.training.stages import Stage


def stages(config):
    del config
    return [Stage("pretrain", ("train.steps=6",)),
            Stage("finetune", ("train.steps=10", "optim.learning_rate=0.001"))]


class _Slow:
    def __init__(self, inner, seconds):
        self.inner, self.seconds = inner, seconds

    def __next__(self):
        time.sleep(self.seconds)
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def build(config):
    e = config.experiment
    if "stage" not in e:
        raise ValueError(f"staged_toy: expected experiment.stage (set by the stage runner), "
                         f"got keys {sorted(e)}")
    base = regression_experiment(config)
    init_fn, hooks = base.init_fn, {}
    if e["stage"] == "finetune":
        run = os.path.join(e["run_dir"], "pretrain")
        hooks = init_hooks(run, "staged_toy finetune")

        def init_fn(rng):
            fresh = base.init_fn(rng)
            return pretrained(fresh, run, {k: "backbone" for k in fresh},
                              "staged_toy finetune")

    seconds = float(e.get("batch_sleep", 0.0))
    train_iterator = base.train_iterator
    if seconds:
        train_iterator = lambda i, n, s: _Slow(base.train_iterator(i, n, s), seconds)
    return dataclasses.replace(
        base, name=f"staged_toy/{e['stage']}", init_fn=init_fn, train_iterator=train_iterator,
        assets={"notes.txt": e["notes"]} if "notes" in e else {}, **hooks,
        export_params=lambda params: {"backbone": params["policy"]})
