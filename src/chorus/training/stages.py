"""Staged experiments: one command, several trainer runs in order (pretrain -> finetune, a
codec's tokenizer -> detokenizer -> vocoder, a backbone -> its MTP heads).

An experiment module defines, besides `build(config)`,

    def stages(config) -> Sequence[Stage]:
        return [Stage("backbone", ("train.steps=800",)),
                Stage("heads", ("train.steps=200", "experiment.mtp_stage=heads"))]

and `chorus train --experiment E --workdir W` runs each stage as its own Trainer run in
`W/<name>/` (its own config.json, checkpoints, metrics) with the config

    base config + stage.overrides + experiment.stage=<name> + experiment.run_dir=W

so `build` tells the stages apart by `config.experiment["stage"]`; an earlier stage's run is
at `os.path.join(config.experiment["run_dir"], name)`. A stage initialized from it does not
read it in `build` (which must stay cheap: a stage's run must load without the stages before
it): its Experiment takes `**chorus.training.init_from.init_hooks(that run)` (preload before a
fresh init, release after) and its init_fn fills fresh trees with `init_from.pretrained`
(tests/staged_toy.py). A stage whose latest checkpoint reached its
train.steps is skipped, so re-running the command after an interruption (or kill -9) skips
the finished stages and resumes the interrupted one; a stage that stops early (SIGTERM,
out of data) stops the sequence. `W/stages.json` lists the stages; `--stage NAME` runs one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import jax

from chorus.atomic import write_json
from chorus.config import Config, apply_overrides
from chorus.training.checkpointing import CHECKPOINT_DIR, Checkpoints
from chorus.training.experiment import ExperimentError, import_experiment_module, load_experiment
from chorus.training.run_config import check_resumable

STAGES_NAME = "stages.json"
STAGE_KEY = "experiment.stage"
RUN_DIR_KEY = "experiment.run_dir"
MODULE_KEY = "experiment.module"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str  # the stage's directory under the run dir
    overrides: tuple[str, ...] = ()  # dotted `--set` overrides over the base config

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ExperimentError(f"Stage.name: expected a directory name of letters, digits, "
                                  f"'_', '-', '.' (e.g. 'pretrain'), got {self.name!r}")
        if not (isinstance(self.overrides, tuple)
                and all(isinstance(o, str) for o in self.overrides)):
            raise ExperimentError(f"Stage {self.name!r}.overrides: expected a tuple of "
                                  f"'key=value' strings, got {self.overrides!r}")


def module_stages(module: Any, config: Config) -> tuple[Stage, ...] | None:
    """The module's `stages(config)`, checked; None for a single-run experiment."""
    stages_fn = getattr(module, "stages", None)
    if stages_fn is None:
        return None
    where = f"{module.__name__}.stages(config)"
    if not callable(stages_fn):
        raise ExperimentError(f"{where}: expected a function, got {type(stages_fn).__name__}")
    stages = tuple(stages_fn(config))
    if not stages or not all(isinstance(s, Stage) for s in stages):
        raise ExperimentError(f"{where}: expected a non-empty sequence of chorus.training."
                              f"stages.Stage, got {stages!r}")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ExperimentError(f"{where}: expected unique stage names, got {names}")
    return stages


def stage_config(base: Config, stage: Stage, run_dir: str, module: str) -> Config:
    """base + stage.overrides + the stage's name, the run dir and the experiment module (so
    each stage's config.json alone rebuilds it)."""
    config = apply_overrides(base, list(stage.overrides))
    return apply_overrides(config, {STAGE_KEY: stage.name, MODULE_KEY: module,
                                    RUN_DIR_KEY: os.path.abspath(run_dir)})


def write_stages(run_dir: str, module: str, stages: Sequence[Stage]) -> str:
    path = os.path.join(run_dir, STAGES_NAME)
    write_json(path, {"experiment": module, "stages": [
        {"name": s.name, "overrides": list(s.overrides), "workdir": s.name} for s in stages]})
    return path


def read_stages(run_dir: str) -> tuple[Stage, ...]:
    path = os.path.join(run_dir, STAGES_NAME)
    try:
        with open(path) as f:
            data = json.load(f)
        return tuple(Stage(s["name"], tuple(s["overrides"])) for s in data["stages"])
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no stage list; is {run_dir!r} a staged run "
                                "(written by `chorus train`)?") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected {{'stages': [{{'name', 'overrides'}}, ...]}}, got "
                         f"unreadable content ({type(e).__name__}: {e})") from None


def is_finished(stage_dir: str, config: Config) -> bool:
    """The stage's latest checkpoint reached its train.steps (its config checked first)."""
    if not os.path.isdir(os.path.join(stage_dir, CHECKPOINT_DIR)):
        return False
    ckpts = Checkpoints(stage_dir, read_only=True)
    try:
        step = ckpts.latest_step()
        if step is None or step < config.train.steps:
            return False
        check_resumable(ckpts.saved_config(step), config, f"{ckpts.directory}/{step}")
    finally:
        ckpts.close()
    return True


@dataclasses.dataclass(frozen=True)
class StageResult:
    name: str
    workdir: str
    status: str  # "skipped" (already finished) or the TrainResult's status
    step: int | None  # the stage's step (None when skipped: see its checkpoints)


def run_stages(module_name: str, base: Config, run_dir: str, *, only: str | None = None,
               console: bool = True, stages: Sequence[Stage] | None = None,
               **trainer_kwargs) -> list[StageResult]:
    """Runs the module's stages in order (or only `only`); stops after a stage that did not
    complete. Returns one StageResult per stage visited. `stages`: the module's
    `module_stages(module, base)` when the caller has them (else they are read here)."""
    from chorus.training.trainer import Trainer

    if stages is None:
        module = import_experiment_module(module_name)
        stages = module_stages(module, base)
        if stages is None:
            raise ExperimentError(f"--experiment {module_name}: {module.__name__} defines no "
                                  "stages(config); --stage needs a staged experiment")
    names = [s.name for s in stages]
    if only is not None and only not in names:
        raise ExperimentError(f"--stage {only}: expected one of {names}")
    run_dir = os.path.abspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    if jax.process_index() == 0:
        write_stages(run_dir, module_name, stages)
    results = []
    for number, stage in enumerate(stages, 1):
        if only is not None and stage.name != only:
            continue
        config = stage_config(base, stage, run_dir, module_name)
        stage_dir = os.path.join(run_dir, stage.name)
        label = f"stage {number}/{len(stages)} {stage.name}"
        if is_finished(stage_dir, config):
            if console:
                print(f"{label}: finished (step {config.train.steps}), skipped", flush=True)
            results.append(StageResult(stage.name, stage_dir, "skipped", None))
            continue
        if console:
            print(f"{label}: {stage_dir}", flush=True)
        experiment = load_experiment(module_name, config)  # after the stages before it
        result = Trainer(config, experiment, stage_dir, console=console, **trainer_kwargs).run()
        results.append(StageResult(stage.name, stage_dir, result.status, result.step))
        if result.status != "completed":
            break
    return results
