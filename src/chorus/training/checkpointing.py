"""Checkpoints: orbax CheckpointManager over `workdir/checkpoints/<step>/`, three items each:

    state      the TrainState (params, optimizer state, step, non-finite counters, frozen
               params), saved sharded: each host writes its shards, and a restore may target
               any other mesh (orbax reshards to the shardings of the abstract target)
    progress   JSON: the base RNG key, each process's data-iterator state, the step
    config     JSON: the run's full resolved config (checked on resume)

Saves are async by default (the device->host copy blocks, the file writes run in the
background) and only the newest train.keep_checkpoints survive. Orbax writes into
`<step>.orbax-checkpoint-tmp-*` and renames on completion, so a run killed mid-save leaves a
tmp dir that `latest_step` ignores (and the next run removes).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import orbax.checkpoint as ocp

from chorus.config import Config
from chorus.training.experiment import Experiment, merge_params
from chorus.training.state import make_param_spec

CHECKPOINT_DIR = "checkpoints"


class RestoreError(ValueError):
    """A checkpoint cannot be restored as asked (a missing step, params that do not fit)."""


@dataclasses.dataclass(frozen=True)
class Restored:
    step: int
    state: Any
    progress: dict
    config: dict


class Checkpoints:
    """One run's checkpoints: `save`, the full `restore` (resume), `restore_params` (the
    params-only partial restore inference uses)."""

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
            create=not read_only,
            save_interval_steps=0 if read_only else 1,  # (orbax warns unless told)
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, progress: dict, config: Config) -> bool:
        """Starts saving `state` as `step` (returns once device buffers are copied to host)."""
        if step in self._manager.all_steps():
            return False
        return self._manager.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            progress=ocp.args.JsonSave(progress),
            config=ocp.args.JsonSave(config.to_dict()),
        ))

    def saved_config(self, step: int) -> dict:
        return self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))["config"]

    def restore(self, step: int, abstract_state: Any) -> Restored:
        """Restores `step` onto the shardings of `abstract_state` (ShapeDtypeStructs). The
        saved config is not checked here: callers run run_config.check_resumable on
        `saved_config(step)` first (the Trainer, the stage runner)."""
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            progress=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore(),
        ))
        return Restored(step=step, state=out["state"], progress=out["progress"],
                        config=out["config"])

    def restore_params(self, step: int, params: Any, frozen: Any) -> tuple[Any, Any]:
        """Only the `params` and `frozen` subtrees of the saved TrainState, onto the shardings
        of the given ShapeDtypeStructs: an orbax partial restore, so the optimizer state, the
        counters, the data position and the RNG are never read."""
        item = {"params": params, "frozen": frozen} if frozen else {"params": params}
        out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True)))["state"]
        return out["params"], out.get("frozen", {})

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def checkpoint_step(ckpts: Checkpoints, step: int | None, workdir: str) -> int:
    """`step` if saved (default: the latest complete checkpoint), else an error naming the run."""
    steps = ckpts.all_steps()
    if not steps:
        raise FileNotFoundError(f"{workdir}: no complete checkpoint in {ckpts.directory}")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise RestoreError(f"{workdir}: no checkpoint at step {step}; saved steps: {steps}")
    return step


def restore_params(config: Config, experiment: Experiment, workdir: str, mesh,
                   step: int | None = None) -> tuple[int, Any]:
    """(step, the checkpoint's trainable and frozen params merged) on `mesh`'s shardings.

    Params only: the optimizer state is never read. `config` only has to build params of the
    saved shapes (its mesh, decode and eval settings may differ from the run's)."""
    spec = make_param_spec(config, experiment, mesh)
    ckpts = Checkpoints(workdir, read_only=True)
    try:
        step = checkpoint_step(ckpts, step, workdir)
        try:
            params, frozen = ckpts.restore_params(step, spec.params, spec.frozen)
        except (ValueError, KeyError) as e:
            raise RestoreError(
                f"{workdir}: checkpoint {step} does not hold the params that experiment "
                f"{experiment.name!r} builds from this config (do the overrides change "
                f"parameter shapes?): {e}") from None
    finally:
        ckpts.close()
    return step, merge_params(params, frozen)
