"""`chorus rl`: DPO / GRPO / PPO (any registered algorithm) on the shared backbone through
the one Trainer.

    chorus rl --experiment E --algo dpo|grpo|ppo --workdir W [--init-from RUN]
              [--sft-steps N [--sft-set k=v ...]] [--preset P] [--set k=v ...] [--quiet]

E builds its Experiment from `config.experiment` (chorus.rl.settings: rewards, group_size,
updates_per_rollout, sampling, grpo/ppo/dpo sub-configs, ...); `--algo` names an algorithm of
chorus.rl.algorithms' registry (an experiment module may register more). `--sft-steps N` first
runs a supervised warm-up of N steps (algo sft) in W/sft and initializes policy and reference
from it; `--init-from` names such a run (or any run exporting a "backbone") directly.
Re-running the same command resumes (warm-up and RL).

Writes into W, besides the Trainer's checkpoints / config.json / metrics.jsonl:
    eval_initial.json     held-out scores of the initial policy (before any RL step)
    eval/step_<N>.json    held-out scores of the final checkpoint
    final_metrics.json    last logged train metrics, `first/<k>` for the first logged step,
                          `initial/<k>` and `final/<k>` held-out scores (numbers only)
    DONE                  once training completed and final_metrics.json is written
Exit codes: 0 done or interrupted with a checkpoint; 1 non-finite losses; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from chorus.atomic import write_json, write_text
from chorus.config import ConfigError, add_config_args, apply_overrides, load_config

INITIAL_EVAL, FINAL_METRICS, DONE_MARKER = "eval_initial.json", "final_metrics.json", "DONE"
# Train metrics copied from the first logged step too (to show what moved).
FIRST_KEYS = ("loss", "loss/value", "loss/policy", "kl", "reward/", "rewards/")


def _numbers(record: dict, prefix: str = "") -> dict[str, float]:
    return {prefix + k: float(v) for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def read_train_log(workdir: str) -> tuple[dict, dict]:
    """(first, last) train-step records of metrics.jsonl (last record per step wins)."""
    steps: dict[int, dict] = {}
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if "event" not in record and "step" in record:
                    steps[int(record["step"])] = record
    if not steps:
        return {}, {}
    return steps[min(steps)], steps[max(steps)]


def final_metrics(workdir: str, initial: dict, final: dict) -> dict[str, float]:
    first, last = read_train_log(workdir)
    out = _numbers(last)
    out.pop("fingerprint", None)
    out.update(_numbers({k: v for k, v in first.items() if k.startswith(FIRST_KEYS)},
                        "first/"))
    out.update(_numbers(initial, "initial/"))
    out.update(_numbers({k: v for k, v in final.items() if k != "step"}, "final/"))
    return out


def _initial_eval(config, experiment, workdir: str) -> dict:
    """Held-out scores of the params the Trainer starts from (state.init_params: same init
    key, the run's mesh and the trainer's shardings; the rollouts run there too).

    before_init runs as the Trainer runs it before a fresh init; after_init is left to the
    Trainer's own fresh init right after, which reuses what before_init read (the init run's
    preloaded copy) and then drops it."""
    from chorus import sharding
    from chorus.training.state import init_params

    path = os.path.join(workdir, INITIAL_EVAL)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    if experiment.before_init is not None:
        experiment.before_init()
    params = init_params(config, experiment, sharding.make_mesh(config.mesh))
    scores = experiment.evaluate(params, workdir)
    os.makedirs(workdir, exist_ok=True)
    write_json(path, scores)
    return scores


def _run(prog: str, config, experiment, workdir: str, quiet: bool):
    from chorus.training.trainer import Trainer

    result = Trainer(config, experiment, workdir, console=not quiet).run()
    print(f"{prog}: {result.status} at step {result.step} in {workdir}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus rl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="experiments/<name>.py")
    parser.add_argument("--algo", required=True,
                        help="a registered algorithm: dpo | grpo | ppo (| sft, the warm-up)")
    parser.add_argument("--workdir", required=True, help="run directory (created; resumed)")
    parser.add_argument("--init-from", default=None,
                        help="a run directory whose latest checkpoint initializes the policy")
    parser.add_argument("--sft-steps", type=int, default=0,
                        help="supervised warm-up steps in WORKDIR/sft first (0 = none)")
    parser.add_argument("--sft-set", dest="sft_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="overrides for the warm-up only")
    parser.add_argument("--quiet", action="store_true", help="no console progress lines")
    add_config_args(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.sft_steps < 0:
        parser.error(f"--sft-steps: expected >= 0, got {args.sft_steps}")
    if args.sft_steps and args.init_from:
        parser.error("--sft-steps and --init-from: expected at most one initialization")

    from chorus.rl.init_from import inherit_settings
    from chorus.training import distributed
    from chorus.training.evaluation import evaluate_checkpoint
    from chorus.training.experiment import (
        ExperimentError,
        import_experiment_module,
        load_experiment,
    )
    from chorus.training.run_config import IncompatibleConfigError
    from chorus.training.trainer import NonFiniteLossError

    prog, workdir = "chorus rl", os.path.abspath(args.workdir)
    extra = [f"experiment.module={args.experiment}", f"experiment.algo={args.algo}"]
    init_from = args.init_from and os.path.abspath(args.init_from)
    try:
        config = load_config(args.preset, [*args.overrides, *extra])
        distributed.initialize(config.train)
        if args.sft_steps:
            init_from = os.path.join(workdir, "sft")
            sft_config = apply_overrides(config, [
                "experiment.algo=sft", f"train.steps={args.sft_steps}",
                *args.sft_overrides])
            _run(f"{prog} (sft warm-up)", sft_config,
                 load_experiment(args.experiment, sft_config), init_from, args.quiet)
        if init_from:
            config = apply_overrides(config, [f"experiment.init_from={init_from}"])
        if config.experiment.get("init_from"):  # --init-from, or --set (chorus ablate's runs)
            config = inherit_settings(config, config.experiment["init_from"], getattr(
                import_experiment_module(args.experiment), "RL_INHERITED", ()))
        experiment = load_experiment(args.experiment, config)
        if experiment.evaluate is None:
            raise ExperimentError(f"--experiment {args.experiment}: expected an Experiment "
                                  "with evaluate(params, workdir) for held-out scores")
        initial = _initial_eval(config, experiment, workdir)
        result = _run(prog, config, experiment, workdir, args.quiet)
    except (ConfigError, ExperimentError, IncompatibleConfigError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"{prog}: stopped: {e}", file=sys.stderr)
        return 1
    if result.status != "completed":
        return 0  # interrupted (checkpoint saved) or out of data: re-run to resume
    final = evaluate_checkpoint(config, experiment, workdir)
    metrics = final_metrics(workdir, initial, final)
    write_json(os.path.join(workdir, FINAL_METRICS), metrics)
    write_text(os.path.join(workdir, DONE_MARKER), json.dumps({"step": result.step}) + "\n")
    keys = sorted(k for k in metrics if k.startswith(("initial/heldout", "final/heldout")))
    for key in keys:
        print(f"{prog}: {key} = {metrics[key]:.4f}")
    return 0
