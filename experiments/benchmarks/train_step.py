"""`chorus bench train`: train-step throughput, the trainer's overhead, and data wait.

    chorus bench train [--preset cpu-tiny] [--set k=v ...] [--steps 20] [--data DIR]
                       [--out runs/bench/train]

In one process, on the same model and the same batch:

  bare      a plain `jax.jit` step (value_and_grad + optax update, donated buffers) on the
            same devices, N steps dispatched back to back, timed end to end
  trainer   chorus's full path: `Trainer.run` (prefetch thread, global-array placement,
            sharded jit with donation, NaN/Inf guard, per-step metrics fetch, JSONL +
            TensorBoard logging) on an iterator that repeats that batch
  overhead  trainer step time / bare step time (goal <= 1.05)

The two alternate for --rounds rounds and each path's fastest round counts: on a shared host
contention only ever adds time, so the minimum is the least noisy estimate.

With `--data DIR` (a `chorus data synth` corpus) the trainer also runs the ASR experiment
(its own model: encoder, adaptor, MTP heads, CTC; not the synthetic batches' backbone) twice
per round, alternating:

  asr fixed   on one real batch of that pipeline, repeated (the step with no data work)
  asr real    on the real grain pipeline (read, decode, log-mel, pack, prefetch)
  slowdown    asr real / asr fixed (goal <= 1.1): what the data costs the step, waits and
              competition for the cores both (a host pipeline on the step's own cores never
              shows as "data wait" when it keeps ahead, yet it still takes cycles)

and reports the fraction of step time spent waiting for data (goal <= 5%).
Writes results.json and results.md to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import time

import jax
import numpy as np
import optax

from chorus import sharding
from chorus.atomic import write_json, write_text
from chorus.config import Config, add_config_args, apply_overrides, config_from_args
from chorus.training import distributed
from chorus.training.evaluation import close_iterator
from chorus.training.experiment import Experiment
from chorus.training.state import init_state, make_state_spec
from chorus.training.trainer import Trainer
from experiments.benchmarks.synthetic import SyntheticBatches, synthetic_experiment

DEFAULT_OUT = "runs/bench/train"
OVERHEAD_GOAL = 1.05
DATA_WAIT_GOAL = 0.05
DATA_SLOWDOWN_GOAL = 1.1


class RepeatBatch:
    """The same host batch forever (a resumable iterator with nothing to resume)."""

    def __init__(self, batch: dict):
        self.batch = batch

    def __next__(self) -> dict:
        return self.batch

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        del state


class BareStep:
    """A plain jitted train step: the experiment's loss, value_and_grad, the optax update,
    donated buffers. No explicit shardings, guard, metrics, prefetch or logging; params and
    batch sit on the same devices as the trainer's (the same init, the same mesh)."""

    def __init__(self, config: Config, experiment: Experiment, batch: dict, mesh):
        spec = make_state_spec(config, experiment, mesh)
        self.mesh = mesh
        self.params = init_state(spec, experiment, mesh).params
        self.opt_state = spec.tx.init(self.params)
        self.batch = distributed.global_batch(batch, mesh)
        loss_fn, tx = experiment.loss_fn, spec.tx
        key = jax.random.key(0)

        def step(params, opt_state, batch):
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.step = jax.jit(step, donate_argnums=(0, 1))

    def time(self, steps: int, warmup: int) -> float:
        """Seconds per step, `steps` dispatched back to back after `warmup`."""
        loss = None
        with sharding.activate(self.mesh):
            for i in range(warmup + steps):
                if i == warmup:
                    if loss is not None:
                        loss.block_until_ready()
                    start = time.perf_counter()
                self.params, self.opt_state, loss = self.step(self.params, self.opt_state,
                                                              self.batch)
            loss.block_until_ready()
        return (time.perf_counter() - start) / steps


def trainer_run(config: Config, experiment: Experiment, workdir: str, steps: int,
                warmup: int) -> dict:
    """Runs the trainer for warmup + steps; timings over the last `steps` steps."""
    shutil.rmtree(workdir, ignore_errors=True)
    config = apply_overrides(config, {"train.steps": warmup + steps,
                                      "train.checkpoint_every": 10 * (warmup + steps),
                                      "train.eval_every": 10 * (warmup + steps),
                                      "train.log_every": warmup + steps})
    result = Trainer(config, experiment, workdir, console=False).run()
    times = np.asarray(result.step_times[-steps:])
    waits = np.asarray(result.data_waits[-steps:])
    return {"step_time_s": float(times.mean()), "step_time_median_s": float(np.median(times)),
            "data_wait_fraction": float(waits.sum() / times.sum()),
            "final_loss": result.last_metrics.get("loss")}


def run(config: Config, steps: int, warmup: int, rounds: int, data_dir: str | None,
        out: str) -> dict:
    """Alternates bare and trainer runs `rounds` times; each path's fastest round counts
    (on a shared host, contention only ever adds time)."""
    t = config.train
    batch = next(SyntheticBatches(config))
    tokens = t.batch_size * t.seq_len
    base = synthetic_experiment(config)
    fixed = dataclasses.replace(base, eval_iterator=None,
                                train_iterator=lambda i, n, s: RepeatBatch(batch))
    bare_step = BareStep(config, fixed, batch, sharding.make_mesh(config.mesh))
    bare_runs, trainer_runs = [], []
    for _ in range(rounds):
        bare_runs.append(bare_step.time(steps, warmup))
        trainer_runs.append(trainer_run(config, fixed, os.path.join(out, "trainer_run"),
                                        steps, warmup))
    bare = min(bare_runs)
    trainer = min(trainer_runs, key=lambda r: r["step_time_s"])
    result = {
        "preset": config.name, "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(), "jax": jax.__version__,
        "host": platform.node(), "load_average": os.getloadavg(),
        "batch": {"batch_size": t.batch_size, "seq_len": t.seq_len,
                  "clips": t.max_audio_clips, "mel_frames": t.max_mel_frames},
        "steps": steps, "warmup": warmup, "rounds": rounds,
        "bare": {"step_time_s": bare, "runs_s": bare_runs, "tokens_per_s": tokens / bare},
        "trainer": dict(trainer, tokens_per_s=tokens / trainer["step_time_s"],
                        runs_s=[r["step_time_s"] for r in trainer_runs]),
        "overhead_ratio": trainer["step_time_s"] / bare,
        "overhead_goal": OVERHEAD_GOAL,
    }
    if data_dir:
        result.update(asr_data_cost(config, data_dir, steps, warmup, rounds, out))
    return result


def first_batch(experiment: Experiment, seed: int) -> dict:
    """The experiment's first host training batch (one process), its iterator closed."""
    iterator = experiment.train_iterator(0, 1, seed)
    try:
        return next(iterator)
    finally:
        close_iterator(iterator)


def asr_data_cost(config: Config, data_dir: str, steps: int, warmup: int, rounds: int,
                  out: str) -> dict:
    """The ASR experiment's trainer step on one repeated real batch vs on its real pipeline,
    alternated `rounds` times (fastest round of each)."""
    from experiments.asr import build

    asr_config = apply_overrides(config, {"experiment.data_dir": data_dir})
    real_experiment = build(asr_config)
    batch = first_batch(real_experiment, asr_config.train.seed)
    fixed_experiment = dataclasses.replace(real_experiment, eval_iterator=None,
                                           train_iterator=lambda i, n, s: RepeatBatch(batch))
    fixed_runs, real_runs = [], []
    for _ in range(rounds):
        fixed_runs.append(trainer_run(asr_config, fixed_experiment,
                                      os.path.join(out, "asr_fixed_run"), steps, warmup))
        real_runs.append(trainer_run(asr_config, real_experiment,
                                     os.path.join(out, "data_run"), steps, warmup))
    t = asr_config.train
    tokens = t.batch_size * t.seq_len
    fixed = min(fixed_runs, key=lambda r: r["step_time_s"])
    real = min(real_runs, key=lambda r: r["step_time_s"])
    return {
        "asr_fixed_batch": dict(fixed, tokens_per_s=tokens / fixed["step_time_s"],
                                runs_s=[r["step_time_s"] for r in fixed_runs]),
        "real_data": dict(real, tokens_per_s=tokens / real["step_time_s"], data_dir=data_dir,
                          runs_s=[r["step_time_s"] for r in real_runs]),
        "data_slowdown": real["step_time_s"] / fixed["step_time_s"],
        "data_slowdown_goal": DATA_SLOWDOWN_GOAL, "data_wait_goal": DATA_WAIT_GOAL,
    }


def _use_compile_cache(out: str) -> None:
    """Repeated trainer runs compile the same step: load it from a persistent cache."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.join(out, "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def markdown(result: dict) -> str:
    b, tr = result["bare"], result["trainer"]
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    lines = [
        f"# Train step: {result['preset']} on {result['num_devices']}x "
        f"{result['device']} (jax {result['jax']})",
        "",
        f"Batch {result['batch']}; {result['rounds']} rounds of {result['steps']} timed steps "
        f"after {result['warmup']} warm-up; host load average {load}.",
        "",
        "| path | step time (s) | tokens/s | data wait | note |",
        "|---|---|---|---|---|",
        f"| bare jit step | {b['step_time_s']:.4f} | {b['tokens_per_s']:.0f} | - | best of "
        f"{', '.join(f'{x:.4f}' for x in b['runs_s'])} |",
        f"| chorus trainer | {tr['step_time_s']:.4f} | {tr['tokens_per_s']:.0f} | "
        f"{100 * tr['data_wait_fraction']:.2f}% | best of "
        f"{', '.join(f'{x:.4f}' for x in tr['runs_s'])}; overhead "
        f"x{result['overhead_ratio']:.3f} (goal <= {result['overhead_goal']}) |",
    ]
    if "real_data" in result:
        f, r = result["asr_fixed_batch"], result["real_data"]
        lines.append(f"| trainer, ASR model, one real batch repeated | {f['step_time_s']:.4f} | "
                     f"{f['tokens_per_s']:.0f} | {100 * f['data_wait_fraction']:.2f}% | best of "
                     f"{', '.join(f'{x:.4f}' for x in f['runs_s'])} |")
        lines.append(f"| trainer, ASR model, real pipeline | {r['step_time_s']:.4f} | "
                     f"{r['tokens_per_s']:.0f} | {100 * r['data_wait_fraction']:.2f}% | best of "
                     f"{', '.join(f'{x:.4f}' for x in r['runs_s'])}; slowdown "
                     f"x{result['data_slowdown']:.3f} (goal <= {result['data_slowdown_goal']}); "
                     f"data wait goal <= {100 * result['data_wait_goal']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus bench train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of bare/trainer")
    parser.add_argument("--data", default=None, help="corpus dir: also time the real pipeline")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.steps < 2 or args.warmup < 1 or args.rounds < 1:
        parser.error(f"--steps >= 2, --warmup >= 1, --rounds >= 1 expected, got {args.steps}, "
                     f"{args.warmup}, {args.rounds}")
    config = config_from_args(args)
    _use_compile_cache(args.out)
    result = run(config, args.steps, args.warmup, args.rounds, args.data, args.out)
    write_json(os.path.join(args.out, "results.json"), result)
    table = markdown(result)
    write_text(os.path.join(args.out, "results.md"), table)
    print(table)
    print(json.dumps({k: result[k] for k in ("overhead_ratio", "data_slowdown") if k in result}))
    return 0
