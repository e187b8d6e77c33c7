"""The one trainer: every mode and algorithm runs through `Trainer(config, experiment, workdir)`.

    run():  mesh -> shardings from the params' logical names -> restore the latest checkpoint
            (or init) -> data iterator at its saved position -> loop:
                next batch (prefetched) -> jitted sharded step (donated state, NaN/Inf guard)
                -> metrics of the previous step (one step behind, so the host never stalls
                the device) -> eval / checkpoint when due -> stop on SIGTERM / Ctrl-C
            -> final checkpoint.

Resuming replays the uninterrupted run exactly: the state, the base RNG key and the data
position are all restored, and step randomness is fold_in(key, step).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from chorus import sharding
from chorus.config import Config
from chorus.progress import Progress, progress
from chorus.training import distributed
from chorus.training.assets import copy_assets
from chorus.training.checkpointing import Checkpoints
from chorus.training.evaluation import close_iterator, evaluate_loss, host_scalars
from chorus.training.experiment import Experiment, merge_params
from chorus.training.hardware import mfu, peak_flops_per_device
from chorus.training.interrupts import StopRequests
from chorus.training.metrics import MetricsLogger, si
from chorus.training.optimizer import learning_rate_schedule
from chorus.training.partitioning import jit_train_step
from chorus.training.prefetch import Prefetcher
from chorus.training.run_config import check_resumable, write_run_config
from chorus.training.state import StateSpec, init_state, make_state_spec
from chorus.training.step import step_key


class NonFiniteLossError(RuntimeError):
    """Too many non-finite steps in a row (train.max_nonfinite_in_a_row)."""


def replicated_array(value: np.ndarray, mesh) -> jax.Array:
    """A host value (identical on every process) as a replicated global array."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding.replicated(mesh),
                                        lambda index: value[index])


@dataclasses.dataclass(frozen=True)
class TrainResult:
    step: int  # train steps completed (the state's step)
    status: str  # "completed" | "interrupted" | "data_exhausted"
    signal: str | None  # SIGTERM / SIGINT when interrupted by one
    resumed_from: int | None
    checkpoint_step: int | None  # newest checkpoint on disk
    last_metrics: dict[str, float]
    step_times: tuple[float, ...]  # this attempt, the first (compiling) step excluded
    data_waits: tuple[float, ...]  # same steps

    @property
    def data_wait_fraction(self) -> float:
        total = sum(self.step_times)
        return sum(self.data_waits) / total if total else math.nan


@dataclasses.dataclass
class _Pending:
    """A dispatched step whose metrics are still on the device."""

    step: int
    metrics: Any
    fingerprint: str
    data_wait: float
    tokens: int | None


class Trainer:
    def __init__(self, config: Config, experiment: Experiment, workdir: str, *,
                 devices: Sequence[jax.Device] | None = None, console: bool = True,
                 stop_at_step: int | None = None):
        """stop_at_step: behave as if interrupted right after that step (tests, schedules)."""
        self.config, self.experiment = config, experiment
        self.workdir = os.path.abspath(workdir)
        self.mesh = sharding.make_mesh(config.mesh, devices)
        self.console, self.stop_at_step = console, stop_at_step
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.is_main = self.process_index == 0
        devs = self.mesh.devices.reshape(-1)
        self.num_devices = devs.size
        self.peak_flops = peak_flops_per_device(devs[0].device_kind,
                                                config.train.peak_flops_per_device)

    # ------------------------------------------------------------------ setup

    def _restore_or_init(self, ckpts: Checkpoints, spec: StateSpec, logger: MetricsLogger):
        latest = ckpts.latest_step()
        if latest is None:
            if self.experiment.before_init is not None:
                self.experiment.before_init()
            state = init_state(spec, self.experiment, self.mesh)
            if self.experiment.after_init is not None:
                self.experiment.after_init()
            return state, jax.random.key_data(spec.base_key), None, None
        restored = ckpts.restore(latest, spec.abstract)
        progress_item = restored.progress
        data_states = progress_item["data"]
        if len(data_states) != self.process_count:
            raise ValueError(f"{ckpts.directory}/{latest}: saved by {len(data_states)} "
                             f"process(es), restoring with {self.process_count}; each host's "
                             "data position cannot be mapped to another process count")
        logger.event("resume", step=latest)
        return (restored.state, np.asarray(progress_item["rng"], np.uint32),
                data_states[self.process_index], latest)

    def _check_batch(self, arrays: dict) -> None:
        rows = {k: v.shape[0] for k, v in arrays.items()}
        if len(set(rows.values())) != 1:
            raise ValueError(f"train batch: expected one leading (batch) size for every key, "
                             f"got {rows}")
        dp = sharding.data_parallel_size(self.mesh)
        (global_rows,) = set(rows.values())
        if global_rows % dp:
            raise ValueError(f"train batch: expected global rows (local x {self.process_count} "
                             f"processes) divisible by mesh data x fsdp = {dp}, got "
                             f"{global_rows}")

    # ------------------------------------------------------------------ run

    def run(self) -> TrainResult:
        cfg = self.config
        os.makedirs(self.workdir, exist_ok=True)
        ckpts = Checkpoints(self.workdir, keep=cfg.train.keep_checkpoints,
                            async_save=cfg.train.async_checkpointing)
        latest = ckpts.latest_step()
        if latest is not None:  # fail before touching the workdir's config.json
            check_resumable(ckpts.saved_config(latest), cfg, f"{ckpts.directory}/{latest}")
        if self.is_main:
            write_run_config(self.workdir, cfg)
            copy_assets(self.workdir, self.experiment.assets,
                        f"Experiment {self.experiment.name!r}")
        logger = MetricsLogger(self.workdir, enabled=self.is_main)
        prefetcher = iterator = bar = None
        # Installed before the prefetch thread starts: a signal during setup is a stop request.
        with StopRequests() as stops:
            try:
                spec = make_state_spec(cfg, self.experiment, self.mesh)
                state, key_data, data_state, resumed_from = self._restore_or_init(ckpts, spec,
                                                                                  logger)
                step = int(jax.device_get(state.step))
                bar = progress(cfg.train.steps, "train", unit="step", initial=step,
                               enabled=self.console and self.is_main)
                if resumed_from is not None:
                    bar.write(f"resumed from {ckpts.directory}/{resumed_from}")
                logger.event("start", step=step, devices=self.num_devices,
                             processes=self.process_count,
                             mesh=dict(zip(self.mesh.axis_names, self.mesh.devices.shape,
                                           strict=True)),
                             compute_dtype=cfg.model.dtype, param_dtype=cfg.model.param_dtype)
                iterator = self.experiment.train_iterator(self.process_index, self.process_count,
                                                          cfg.train.seed)
                if data_state is not None:
                    iterator.set_state(data_state)
                # On-policy batches depend on the latest params: no prefetching ahead of the step.
                depth = 0 if self.experiment.policy_sink is not None else cfg.train.prefetch_batches
                prefetcher = Prefetcher(iterator, lambda b: distributed.global_batch(b, self.mesh),
                                        depth=depth)
                rng = replicated_array(np.asarray(key_data), self.mesh)
                return self._loop(state, step, spec, rng, prefetcher, ckpts, logger, bar,
                                  stops, resumed_from)
            finally:
                if prefetcher is not None:
                    prefetcher.close()
                close_iterator(iterator)
                ckpts.close()
                if bar is not None:
                    bar.close()
                logger.close()

    def _save(self, ckpts: Checkpoints, step: int, state, rng, data_state,
              logger: MetricsLogger) -> None:
        progress_item = {"step": step, "rng": np.asarray(jax.device_get(rng)).tolist(),
                         "data": distributed.gather_json(data_state)}
        if ckpts.save(step, state, progress_item, self.config):
            logger.event("checkpoint", step=step)

    def _loop(self, state, step: int, spec: StateSpec, rng, prefetcher: Prefetcher,
              ckpts: Checkpoints, logger: MetricsLogger, bar: Progress, stops: StopRequests,
              resumed_from: int | None) -> TrainResult:
        """The train loop from `state`, whose step is `step`."""
        cfg, t = self.config, self.config.train
        lr_at = learning_rate_schedule(cfg.optim, t.steps)
        step_fn = None
        window: list[dict] = []
        step_times: list[float] = []
        data_waits: list[float] = []
        last: dict[str, float] = {}
        pending: _Pending | None = None
        last_done = None  # when the previous step's metrics arrived
        saved_step = ckpts.latest_step()
        data_state = None
        status, signal_name = "completed", None

        def finish(p: _Pending) -> None:
            nonlocal last_done, last
            values = host_scalars(p.metrics)
            now = time.perf_counter()
            step_time = None if last_done is None else now - last_done
            last_done = now
            if step_time is not None:
                step_times.append(step_time)
                data_waits.append(p.data_wait)
            record = {"step": p.step, **values, "fingerprint": p.fingerprint,
                      "lr": float(lr_at(max(p.step - 1, 0) // cfg.optim.grad_accum_steps)),
                      "data_wait_s": p.data_wait, "step_time_s": step_time}
            logger.record(record)
            window.append(record)
            last = values
            bar.update(1, loss=values["loss"],
                       skipped=int(values["nonfinite_total"]) or None)
            if values.get("nonfinite_in_a_row", 0) >= t.max_nonfinite_in_a_row:
                raise NonFiniteLossError(
                    f"step {p.step}: {int(values['nonfinite_in_a_row'])} steps in a row with a "
                    f"non-finite loss or gradient (train.max_nonfinite_in_a_row="
                    f"{t.max_nonfinite_in_a_row}); updates were skipped; last checkpoint: "
                    f"{ckpts.latest_step()}")
            if p.step % t.log_every == 0 or p.step == t.steps:
                self._log_window(p.step, window, p.tokens, logger, bar)
                window.clear()

        while step < t.steps:
            if self.experiment.policy_sink is not None:  # before the state is donated
                self.experiment.policy_sink(merge_params(state.params, state.frozen))
            try:
                ready, waited = prefetcher.next()
            except StopIteration:
                status = "data_exhausted"
                break
            if step_fn is None:
                self._check_batch(ready.arrays)
                step_fn = jit_train_step(self.experiment.loss_fn, spec.tx, spec.shardings,
                                         self.mesh, ready.arrays)
            with sharding.activate(self.mesh):
                state, metrics = step_fn(state, ready.arrays, rng)
            step += 1
            data_state = ready.data_state
            if pending is not None:
                finish(pending)
            tokens = self.experiment.tokens_per_batch or (
                ready.arrays["tokens"].size if "tokens" in ready.arrays else None)
            pending = _Pending(step, metrics, ready.fingerprint, waited, tokens)
            stop = stops.requested or step == self.stop_at_step
            stop = distributed.any_process(stop)
            if self.experiment.eval_iterator is not None and step % t.eval_every == 0:
                finish(pending)
                pending = None
                self._evaluate(state, rng, step, logger, bar)
            if step % t.checkpoint_every == 0 or stop:
                self._save(ckpts, step, state, rng, data_state, logger)
                saved_step = step
            if stop:
                status, signal_name = "interrupted", stops.signal_name
                break
        if pending is not None:
            finish(pending)
        if data_state is not None and saved_step != step:
            self._save(ckpts, step, state, rng, data_state, logger)
        ckpts.wait()
        logger.event("stop", step=step, status=status, signal=signal_name)
        if status == "interrupted":
            bar.write(f"stopped at step {step} ({signal_name or 'requested'}); checkpoint "
                      f"saved; re-run the same command to resume")
        return TrainResult(step=step, status=status, signal=signal_name,
                           resumed_from=resumed_from, checkpoint_step=ckpts.latest_step(),
                           last_metrics=last, step_times=tuple(step_times),
                           data_waits=tuple(data_waits))

    # ------------------------------------------------------------------ logging / eval

    def _log_window(self, step: int, window: list[dict], tokens: int | None,
                    logger: MetricsLogger, bar: Progress) -> None:
        """Window means into TensorBoard (train/...) and the throughput onto the console."""
        timed = [r for r in window if r["step_time_s"] is not None]
        step_time = float(np.mean([r["step_time_s"] for r in timed])) if timed else math.nan
        wait = sum(r["data_wait_s"] for r in timed)
        total = sum(r["step_time_s"] for r in timed)
        values = {
            "step_time_s": step_time,
            "data_wait_fraction": wait / total if total else 0.0,
            "tokens_per_s": tokens / step_time if tokens and timed else None,
            "mfu": mfu(self.experiment.flops_per_batch, step_time, self.num_devices,
                       self.peak_flops) if timed else None,
        }
        scalars = {f"train/{k}": float(np.mean([r[k] for r in window]))
                   for k in window[-1] if isinstance(window[-1][k], float)
                   and all(isinstance(r.get(k), float) for r in window)
                   and k not in ("data_wait_s", "step_time_s")}
        scalars.update({f"train/{k}": v for k, v in values.items()
                        if v is not None and not (isinstance(v, float) and math.isnan(v))})
        logger.scalars(step, scalars)
        bar.update(0, **{"tok/s": si(values["tokens_per_s"]) if values["tokens_per_s"] else None,
                         "MFU": f"{100 * values['mfu']:.1f}%" if values["mfu"] else None})

    def _evaluate(self, state, rng, step: int, logger: MetricsLogger, bar: Progress) -> None:
        """The eval loop (evaluation.evaluate_loss) on the current params."""
        batches = self.experiment.eval_iterator(self.process_index, self.process_count,
                                                self.config.train.seed)
        try:
            means = evaluate_loss(self.experiment.loss_fn_for_eval,
                                  merge_params(state.params, state.frozen), batches,
                                  key=step_key(rng, step), max_batches=self.config.train.eval_steps,
                                  mesh=self.mesh, desc=f"eval at step {step}",
                                  console=False)
        finally:
            close_iterator(batches)
        count = means.pop("batches")
        if count:
            logger.record({"event": "eval", "step": step, "batches": count, **means})
            logger.scalars(step, {f"eval/{k}": v for k, v in means.items()})
            bar.write(f"eval step {step}: " + ", ".join(f"{k} {v:.4f}"
                                                        for k, v in sorted(means.items())))
