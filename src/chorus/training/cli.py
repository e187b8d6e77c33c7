"""`chorus train` and `chorus eval`.

    chorus train --experiment asr --preset cpu-tiny --workdir W [--data DIR] [--set k=v ...]
                 [--stage NAME] [--quiet]
    chorus eval  --workdir W [--experiment asr] [--step N] [--max-batches N] [--set k=v ...]

`train` resumes from W's latest checkpoint when there is one (re-run the same command after an
interruption). An experiment with `stages(config)` runs each stage in W/<stage>/ in order,
skipping finished ones (`--stage NAME`: only that one; see chorus.training.stages). The
experiment module and the data dir are recorded in the config (experiment.module,
experiment.data_dir), so W/config.json alone reproduces the run and `eval` needs only the
workdir (params only: the optimizer state is not read).

Exit codes: 0 finished or interrupted with a checkpoint saved; 1 stopped on non-finite losses;
2 bad arguments, config or experiment.
"""

from __future__ import annotations

import argparse
import json
import sys

from chorus.config import ConfigError, add_config_args, apply_overrides, load_config

EXPERIMENT_KEY = "experiment.module"
DATA_KEY = "experiment.data_dir"


def _extra_overrides(args: argparse.Namespace) -> list[str]:
    extra = [f"{EXPERIMENT_KEY}={args.experiment}"]
    if args.data:
        extra.append(f"{DATA_KEY}={args.data}")
    return extra


def _fail(prog: str, error: Exception) -> int:
    print(f"{prog}: {error}", file=sys.stderr)
    return 2


def train_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True,
                        help="experiments/<name>.py (or an importable module path)")
    parser.add_argument("--workdir", required=True, help="run directory (created; resumed)")
    parser.add_argument("--data", default=None, help="data directory (experiment.data_dir)")
    parser.add_argument("--stage", default=None,
                        help="a staged experiment: run only this stage (default: all, in order)")
    parser.add_argument("--quiet", action="store_true", help="no console progress")
    add_config_args(parser)
    args = parser.parse_args(argv)

    from chorus.training import distributed
    from chorus.training.experiment import (
        ExperimentError,
        import_experiment_module,
        load_experiment,
    )
    from chorus.training.run_config import IncompatibleConfigError
    from chorus.training.stages import module_stages, run_stages
    from chorus.training.trainer import NonFiniteLossError, Trainer

    console = not args.quiet
    try:
        config = load_config(args.preset, [*args.overrides, *_extra_overrides(args)])
        distributed.initialize(config.train)  # before any JAX computation
        stages = module_stages(import_experiment_module(args.experiment), config)
        if args.stage is not None or stages is not None:
            results = run_stages(args.experiment, config, args.workdir, only=args.stage,
                                 console=console, stages=stages)
            for r in results:
                print(f"chorus train: stage {r.name}: {r.status}"
                      + ("" if r.step is None else f" at step {r.step}") + f" in {r.workdir}")
            return 0
        experiment = load_experiment(args.experiment, config)
        result = Trainer(config, experiment, args.workdir, console=console).run()
    except (ConfigError, ExperimentError, IncompatibleConfigError, FileNotFoundError) as e:
        return _fail("chorus train", e)
    except NonFiniteLossError as e:
        print(f"chorus train: stopped: {e}", file=sys.stderr)
        return 1
    print(f"chorus train: {result.status} at step {result.step}; latest checkpoint "
          f"{result.checkpoint_step} in {args.workdir}")
    return 0


def eval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a `chorus train` workdir")
    parser.add_argument("--experiment", default=None,
                        help=f"default: the run's {EXPERIMENT_KEY}")
    parser.add_argument("--data", default=None, help="data directory (experiment.data_dir)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (latest)")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="eval-loop batches (default: the whole eval split)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="dotted override of the run's config")
    args = parser.parse_args(argv)

    from chorus.training import distributed
    from chorus.training.checkpointing import RestoreError
    from chorus.training.evaluation import evaluate_checkpoint
    from chorus.training.experiment import ExperimentError, load_experiment
    from chorus.training.restore import resolve_run_dir
    from chorus.training.run_config import read_run_config

    try:
        workdir = resolve_run_dir(args.workdir)  # a staged run: its last stage
        config = read_run_config(workdir)
        data = [f"{DATA_KEY}={args.data}"] if args.data else []
        config = apply_overrides(config, [*args.overrides, *data])
        name = args.experiment or config.experiment.get("module")
        if not name:
            raise ConfigError(f"{workdir}/config.json: no {EXPERIMENT_KEY}; pass "
                              "--experiment NAME")
        distributed.initialize(config.train)
        experiment = load_experiment(name, config)
        result = evaluate_checkpoint(config, experiment, workdir, step=args.step,
                                     max_batches=args.max_batches)
    except (ConfigError, ExperimentError, RestoreError, FileNotFoundError) as e:
        return _fail("chorus eval", e)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0
