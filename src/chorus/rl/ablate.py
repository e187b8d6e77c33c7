"""Ablation runner: expand a YAML sweep into runs of `chorus rl`, run each in its own workdir
(resumably), then write a comparison table (markdown + CSV, mean ± std over seeds) and plots.

    chorus ablate --experiment tts --sweep sweeps/tts_rewards.yaml [--workdir ROOT] [--dry-run]
                  [--set KEY=VALUE ...]   # added to the sweep's base for every run (e.g.
                                          # experiment.init_from=RUN); a grid key is an error

Sweep file (see docs/rl.md):

    name: tts_rewards                  # default: the file's stem
    args: [--preset, cpu-tiny]         # extra CLI args for every run
    base: {train.steps: 40}            # --set overrides for every run
    grid:                              # cartesian product of the axes
      algo: [grpo, ppo]                # -> --algo
      reward:                          # -> --set <reward_key>=<mix>; label: mix
        cer: {neg_cer: 1.0}
        cer_sim: {neg_cer: 1.0, speaker_sim: 0.5}
      experiment.kl_coef: [0.01, 0.05] # any dotted key -> --set key=value
      seed: [0, 1]                     # -> --set <seed_key>=S; averaged over in the table
    metrics: [reward/total, kl]        # table columns (default: all numeric final metrics)

A run's workdir holds what `chorus rl` writes — `metrics.jsonl` ({"step", "reward/total",
"reward/<name>", "kl", ...} per line) and `final_metrics.json` — plus `ablate_run.json`,
`run.log` and, once it succeeded, `DONE`. Runs with `DONE` are skipped on the next invocation.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import json
import math
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from chorus.atomic import write_bytes, write_text

DEFAULT_COMMAND = ("{python}", "-m", "chorus.cli", "rl", "--experiment", "{experiment}",
                   "--algo", "{algo}", "--workdir", "{workdir}")
SWEEP_KEYS = ("name", "args", "base", "grid", "metrics", "curve_metrics", "reward_key",
              "seed_key", "algo")
DEFAULT_CURVES = ("reward/total", "kl")
METRICS_LOG, FINAL_METRICS, DONE_MARKER = "metrics.jsonl", "final_metrics.json", "DONE"
RUN_SPEC, RUN_LOG = "ablate_run.json", "run.log"


class SweepError(ValueError):
    """A sweep file is invalid; the message names file, field, expected and got."""


# ----------------------------------------------------------------------------- sweep spec


@dataclasses.dataclass(frozen=True)
class Axis:
    key: str  # "algo", "seed", "reward" or a dotted config key
    entries: tuple[tuple[str, Any], ...]  # (label, value)


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    axes: tuple[Axis, ...]
    base: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    args: tuple[str, ...] = ()
    metrics: tuple[str, ...] | None = None
    curve_metrics: tuple[str, ...] = DEFAULT_CURVES
    reward_key: str = "experiment.rewards"
    seed_key: str = "train.seed"
    algo: str | None = None  # used when there is no algo axis


@dataclasses.dataclass(frozen=True)
class Run:
    name: str  # workdir name, from all settings
    setting: str  # name without the seed: runs of one setting are averaged
    labels: Mapping[str, str]  # axis key -> label (seed excluded)
    algo: str
    seed: Any
    overrides: Mapping[str, Any]  # dotted key -> value, passed as --set
    workdir: Path


def _bad(path: Path, field: str, expected: str, got: Any) -> SweepError:
    return SweepError(f"{path}: {field}: expected {expected}, got {got!r}")


def _label(value: Any) -> str:
    if isinstance(value, Mapping):
        return "+".join(f"{k}{_label(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "-".join(_label(v) for v in value)
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _axis(path: Path, key: str, spec: Any) -> Axis:
    field = f"grid.{key}"
    if isinstance(spec, Mapping):  # label -> value
        entries = tuple((_safe(str(label)), value) for label, value in spec.items())
    elif isinstance(spec, list):
        entries = tuple((_safe(_label(value)), value) for value in spec)
    else:
        raise _bad(path, field, "a list of values or a mapping of label -> value", spec)
    if not entries:
        raise _bad(path, field, "at least one value", spec)
    labels = [label for label, _ in entries]
    if len(set(labels)) != len(labels):
        raise _bad(path, field, "values with distinct labels", labels)
    if key == "algo" and not all(isinstance(v, str) for _, v in entries):
        raise _bad(path, field, "algorithm names (strings)", [v for _, v in entries])
    if key == "reward" and not all(isinstance(v, Mapping) for _, v in entries):
        raise _bad(path, field, "reward mixes (mappings of reward name -> weight)",
                   [v for _, v in entries])
    return Axis(key, entries)


def _str_list(path: Path, field: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(path, field, "a list of strings", value)
    return tuple(value)


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SweepError(f"{path}: cannot read the sweep file: {e}") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise _bad(path, "(top level)", f"a mapping with keys among {list(SWEEP_KEYS)}", data)
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise _bad(path, "(top level)", f"keys among {list(SWEEP_KEYS)}", unknown)
    grid = data.get("grid")
    if not isinstance(grid, Mapping) or not grid:
        raise _bad(path, "grid", "a non-empty mapping of axis -> values", grid)
    base = data.get("base") or {}
    if not isinstance(base, Mapping) or not all(isinstance(k, str) for k in base):
        raise _bad(path, "base", "a mapping of dotted key -> value", base)
    reward_key = str(data.get("reward_key", "experiment.rewards"))
    seed_key = str(data.get("seed_key", "train.seed"))
    aliases = {"reward": reward_key, "seed": seed_key}  # axes that set another key
    clash = sorted(set(base) & ({*grid} | {aliases[k] for k in grid if k in aliases}))
    if clash:
        raise _bad(path, "base", "keys not also swept in grid", clash)
    axes = tuple(_axis(path, str(k), v) for k, v in grid.items())
    algo = data.get("algo")
    if "algo" not in grid and not isinstance(algo, str):
        raise _bad(path, "algo", "an algorithm name (or a grid.algo axis)", algo)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise _bad(path, "name", "a non-empty string", name)
    metrics = data.get("metrics")
    return Sweep(
        name=_safe(name),
        axes=axes,
        base=dict(base),
        args=_str_list(path, "args", data.get("args", [])),
        metrics=None if metrics is None else _str_list(path, "metrics", metrics),
        curve_metrics=_str_list(path, "curve_metrics",
                                data.get("curve_metrics", list(DEFAULT_CURVES))),
        reward_key=reward_key,
        seed_key=seed_key,
        algo=algo,
    )


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Axis key -> name part: the last dotted component unless two axes share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def expand(sweep: Sweep, root: Path) -> list[Run]:
    """The cartesian product of the axes, seeds varying fastest."""
    axes = sorted(sweep.axes, key=lambda a: a.key == "seed")  # seed last: names group nicely
    short = _short_keys([a.key for a in axes])
    runs = []
    for combo in itertools.product(*(a.entries for a in axes)):
        overrides = dict(sweep.base)
        labels: dict[str, str] = {}
        algo, seed, parts = sweep.algo, None, []
        for axis, (label, value) in zip(axes, combo, strict=True):
            parts.append(f"{short[axis.key]}-{label}")
            if axis.key == "seed":
                seed = value
                overrides[sweep.seed_key] = value
                continue
            labels[axis.key] = label
            if axis.key == "algo":
                algo = value
            elif axis.key == "reward":
                overrides[sweep.reward_key] = value
            else:
                overrides[axis.key] = value
        name = "__".join(parts)
        setting = "__".join(p for p, a in zip(parts, axes, strict=True) if a.key != "seed")
        runs.append(Run(name, setting or "all", labels, algo, seed, overrides, root / name))
    return runs


# ----------------------------------------------------------------------------- running


def override_arg(key: str, value: Any) -> str:
    """`key=value` with the value as one-line YAML, so `--set` parses back the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    text = text.removesuffix("...").strip()  # scalars end with a YAML document marker
    if yaml.safe_load(text) != value:
        raise SweepError(f"{key}: value {value!r} does not survive a YAML round trip")
    return f"{key}={text}"


def build_command(run: Run, experiment: str, template: Sequence[str],
                  extra_args: Sequence[str] = ()) -> list[str]:
    fields = {"python": sys.executable, "experiment": experiment, "algo": run.algo,
              "workdir": str(run.workdir), "seed": str(run.seed), "name": run.name}
    try:
        cmd = [part.format(**fields) for part in template]
    except (KeyError, IndexError) as e:
        raise SweepError(f"--command: unknown placeholder {e}; expected some of "
                         f"{sorted(fields)}") from None
    cmd += list(extra_args)
    for key, value in run.overrides.items():
        cmd += ["--set", override_arg(key, value)]
    return cmd


def is_done(run: Run) -> bool:
    return (run.workdir / DONE_MARKER).exists()


def read_final_metrics(workdir: Path) -> dict[str, float]:
    path = workdir / FINAL_METRICS
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: expected a JSON object of metrics: {e}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    return {k: float(v) for k, v in data.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def read_metrics_log(workdir: Path) -> dict[int, dict[str, float]]:
    """step -> metrics; for a step logged twice (a resumed run) the last line wins."""
    path = workdir / METRICS_LOG
    out: dict[int, dict[str, float]] = {}
    if not path.exists():
        return out
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ValueError(f"{path}:{lineno}: expected a JSON object with a 'step', got "
                             f"{line[:80]!r}") from None
        out[step] = {k: float(v) for k, v in record.items()
                     if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}
    return out


def execute(run: Run, command: Sequence[str], timeout: float | None = None) -> bool:
    """Runs one experiment; marks it DONE when it exits 0 and wrote its final metrics."""
    run.workdir.mkdir(parents=True, exist_ok=True)
    spec = {"name": run.name, "setting": run.setting, "labels": dict(run.labels),
            "algo": run.algo, "seed": run.seed, "overrides": dict(run.overrides),
            "command": list(command)}
    write_text(str(run.workdir / RUN_SPEC), json.dumps(spec, indent=2) + "\n")
    with open(run.workdir / RUN_LOG, "ab") as log:  # appended: a re-run keeps the history
        log.write(f"$ {shlex.join(command)}\n".encode())
        log.flush()
        try:
            rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = f"timed out after {timeout} s"
        except OSError as e:  # e.g. the command's program does not exist
            rc = f"could not start: {e}"
    if rc != 0:
        print(f"  {run.name}: failed ({rc}); see {run.workdir / RUN_LOG}", file=sys.stderr)
        return False
    try:
        read_final_metrics(run.workdir)
    except ValueError as e:
        print(f"  {run.name}: exited 0 but {e}", file=sys.stderr)
        return False
    write_text(str(run.workdir / DONE_MARKER), json.dumps({"command": list(command)}) + "\n")
    return True


# ----------------------------------------------------------------------------- report


@dataclasses.dataclass(frozen=True)
class SettingSummary:
    setting: str
    labels: Mapping[str, str]
    seeds: tuple[Any, ...]
    final: Mapping[str, tuple[float, float]]  # metric -> (mean, std over seeds; NaN std if n=1)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; NaN for a single value) ignoring NaNs."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def _metric_order(names: set[str]) -> list[str]:
    def rank(name: str) -> tuple[int, str]:
        if name == "reward/total":
            return 0, name
        if name.startswith("reward/"):
            return 1, name
        return (2, name) if name == "kl" else (3, name)

    return sorted(names, key=rank)


def summarize(runs: Sequence[Run], metrics: Sequence[str] | None) -> tuple[list[SettingSummary],
                                                                           list[str]]:
    done = [r for r in runs if is_done(r)]
    finals = {r.name: read_final_metrics(r.workdir) for r in done}
    if metrics is None:
        metrics = _metric_order({k for f in finals.values() for k in f})
    settings: dict[str, list[Run]] = {}
    for r in done:
        settings.setdefault(r.setting, []).append(r)
    out = []
    for setting, group in settings.items():
        final = {m: mean_std([finals[r.name].get(m, math.nan) for r in group]) for m in metrics}
        out.append(SettingSummary(setting, group[0].labels, tuple(r.seed for r in group), final))
    return out, list(metrics)


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def markdown_table(summaries: Sequence[SettingSummary], metrics: Sequence[str],
                   axis_keys: Sequence[str]) -> str:
    head = ["setting", *axis_keys, "seeds", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        row = [s.setting, *(s.labels.get(k, "") for k in axis_keys), str(len(s.seeds)),
               *(_fmt(*s.final[m]) for m in metrics)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def csv_table(summaries: Sequence[SettingSummary], metrics: Sequence[str],
              axis_keys: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["setting", *axis_keys, "n_seeds",
                     *(f"{m}{suffix}" for m in metrics for suffix in ("_mean", "_std"))])
    for s in summaries:
        writer.writerow([s.setting, *(s.labels.get(k, "") for k in axis_keys), len(s.seeds),
                         *(repr(v) for m in metrics for v in s.final[m])])
    return buf.getvalue()


def curves(runs: Sequence[Run], metric: str) -> dict[str, tuple[list[int], list[float],
                                                                 list[float]]]:
    """setting -> (steps, mean, std) over seeds, on the steps every seed logged."""
    by_setting: dict[str, list[dict[int, float]]] = {}
    for r in runs:
        if is_done(r):
            log = read_metrics_log(r.workdir)
            by_setting.setdefault(r.setting, []).append(
                {step: m[metric] for step, m in log.items() if metric in m})
    out = {}
    for setting, series in by_setting.items():
        steps = sorted(set.intersection(*(set(s) for s in series)))
        if steps:
            stats = [mean_std([s[t] for s in series]) for t in steps]
            out[setting] = (steps, [m for m, _ in stats],
                            [0.0 if math.isnan(sd) else sd for _, sd in stats])
    return out


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes(str(path), buf.getvalue())


def _setting_colors(runs: Sequence[Run]) -> dict[str, str]:
    """One color per setting, the same in every plot."""
    settings = list(dict.fromkeys(r.setting for r in runs))
    return {s: f"C{i % 10}" for i, s in enumerate(settings)}


def plot_curves(runs: Sequence[Run], metrics: Sequence[str], path: Path) -> bool:
    from matplotlib.figure import Figure  # Agg canvas; no pyplot global state

    data = {m: c for m in metrics if (c := curves(runs, m))}
    if not data:
        return False
    colors = _setting_colors(runs)
    fig = Figure(figsize=(6 * len(data), 4))
    for ax, (metric, per_setting) in zip(fig.subplots(1, len(data), squeeze=False)[0],
                                         data.items(), strict=True):
        for setting, (steps, mean, std) in per_setting.items():
            color = colors[setting]
            ax.plot(steps, mean, label=setting, color=color)
            ax.fill_between(steps, [m - s for m, s in zip(mean, std, strict=True)],
                            [m + s for m, s in zip(mean, std, strict=True)], alpha=0.2,
                            color=color)
        ax.set_xlabel("step")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"{metric} (mean ± std over seeds)")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    _save(fig, path)
    return True


def plot_final(summaries: Sequence[SettingSummary], metrics: Sequence[str], path: Path,
               colors: Mapping[str, str]) -> bool:
    from matplotlib.figure import Figure

    if not summaries or not metrics:
        return False
    fig = Figure(figsize=(max(4.0, 0.9 * len(summaries)) * len(metrics), 4.5))
    names = [s.setting for s in summaries]
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        means = [s.final[metric][0] for s in summaries]
        errs = [0.0 if math.isnan(s.final[metric][1]) else s.final[metric][1] for s in summaries]
        ax.bar(range(len(names)), means, yerr=errs, capsize=4, color=[colors[n] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
        ax.set_title(f"final {metric}")
        ax.grid(alpha=0.3, axis="y")
    _save(fig, path)
    return True


def write_report(sweep: Sweep, runs: Sequence[Run], root: Path) -> list[Path]:
    summaries, metrics = summarize(runs, sweep.metrics)
    axis_keys = [a.key for a in sweep.axes if a.key != "seed"]
    written = [root / "summary.md", root / "summary.csv"]
    failed = [r.name for r in runs if not is_done(r)]
    md = [f"# Sweep {sweep.name}\n", f"{len(runs) - len(failed)}/{len(runs)} runs finished; "
          "final metrics as mean ± std (sample std) over seeds.\n",
          markdown_table(summaries, metrics, axis_keys)]
    if failed:
        md.append("\nUnfinished runs: " + ", ".join(f"`{n}`" for n in failed) + "\n")
    write_text(str(root / "summary.md"), "\n".join(md))
    write_text(str(root / "summary.csv"), csv_table(summaries, metrics, axis_keys))
    if plot_curves(runs, sweep.curve_metrics, root / "curves.png"):
        written.append(root / "curves.png")
    if plot_final(summaries, metrics, root / "final_metrics.png", _setting_colors(runs)):
        written.append(root / "final_metrics.png")
    return written


# ----------------------------------------------------------------------------- CLI


def with_overrides(sweep: Sweep, overrides: Sequence[str]) -> Sweep:
    """The sweep with command-line `KEY=VALUE` overrides (YAML values, as `chorus ... --set`)
    in its base: they replace a base key's value, and may not name a swept key."""
    from chorus.config import ConfigError, parse_override

    swept = {{"reward": sweep.reward_key, "seed": sweep.seed_key}.get(a.key, a.key)
             for a in sweep.axes}
    base = dict(sweep.base)
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as e:
            raise SweepError(str(e)) from None
        if key in swept:
            raise SweepError(f"--set {key}: expected a key the sweep does not vary, got one of "
                             f"its grid axes {sorted(swept)}")
        base[key] = value
    return dataclasses.replace(sweep, base=base)


def run_sweep(sweep: Sweep, experiment: str, root: Path,
              template: Sequence[str] = DEFAULT_COMMAND, *, dry_run: bool = False,
              timeout: float | None = None) -> int:
    """Runs every unfinished run, then writes the report. Returns 0 if all runs are done."""
    runs = expand(sweep, root)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise SweepError(f"sweep {sweep.name}: runs with the same name; give axis values "
                         "distinct labels")
    commands = {r.name: build_command(r, experiment, template, sweep.args) for r in runs}
    if dry_run:
        for r in runs:
            state = "done" if is_done(r) else "todo"
            print(f"[{state}] {r.name}\n    {shlex.join(commands[r.name])}")
        return 0
    write_text(str(root / "sweep.json"), json.dumps(
        {"name": sweep.name, "experiment": experiment,
         "runs": [{"name": r.name, "command": commands[r.name]} for r in runs]}, indent=2) + "\n")
    ok = True
    for i, r in enumerate(runs, 1):
        if is_done(r):
            print(f"[{i}/{len(runs)}] {r.name}: done, skipped")
            continue
        print(f"[{i}/{len(runs)}] {r.name}: running", flush=True)
        ok &= execute(r, commands[r.name], timeout)
    for path in write_report(sweep, runs, root):
        print(f"wrote {path}")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus ablate", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", required=True, help="experiment module (asr|tts|...)")
    parser.add_argument("--sweep", required=True, help="sweep YAML file")
    parser.add_argument("--workdir", help="sweep root (default: runs/ablate/<sweep name>)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs; run nothing")
    parser.add_argument("--command", help="command template (shell words; placeholders "
                        "{python} {experiment} {algo} {workdir} {seed} {name}); "
                        "default: " + shlex.join(DEFAULT_COMMAND))
    parser.add_argument("--timeout", type=float, help="seconds per run (default: none)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a --set for every run, added to the sweep's "
                        "base (e.g. experiment.init_from=RUN); repeatable")
    args = parser.parse_args(argv)
    try:
        sweep = with_overrides(load_sweep(args.sweep), args.overrides)
        root = Path(args.workdir or Path("runs") / "ablate" / sweep.name)
        template = shlex.split(args.command) if args.command else DEFAULT_COMMAND
        return run_sweep(sweep, args.experiment, root, template, dry_run=args.dry_run,
                         timeout=args.timeout)
    except (SweepError, ValueError) as e:
        print(f"chorus ablate: {e}", file=sys.stderr)
        return 2
