"""`chorus ablate` end to end with a fake run script that writes what `chorus rl` writes."""

import csv
import json
import shlex
import sys
import textwrap

import numpy as np
import pytest
import yaml

from chorus.config import parse_override
from chorus.rl import ablate

# Deterministic metrics from the run's settings: reward/total at step s (0..4) is
# weight_sum·(s+1)/5 + 0.1·seed; kl = 0.01·(s+1)·(1+seed).
FAKE_RUN = textwrap.dedent("""
    import argparse, json, os, pathlib, sys, yaml
    p = argparse.ArgumentParser()
    p.add_argument("--experiment"); p.add_argument("--algo"); p.add_argument("--workdir")
    p.add_argument("--preset")
    p.add_argument("--set", action="append", default=[])
    a = p.parse_args()
    sets = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    wd = pathlib.Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    with open(wd / "invocations.log", "a") as f:
        f.write(json.dumps({"argv": sys.argv[1:]}) + "\\n")
    weight = sum(sets["experiment.rewards"].values())
    seed = sets["train.seed"]
    with open(wd / "metrics.jsonl", "a") as f:
        for s in range(5):
            rec = {"step": s, "reward/total": weight * (s + 1) / 5 + 0.1 * seed,
                   "reward/neg_cer": -0.5 + 0.1 * s, "kl": 0.01 * (s + 1) * (1 + seed)}
            f.write(json.dumps(rec) + "\\n")
            if os.environ.get("FAKE_FAIL") == wd.name and s == 2:
                sys.exit(3)  # crash mid-run: metrics.jsonl is left partial
    final = dict(rec, steps=5.0)
    final.pop("step")
    (wd / "final_metrics.json").write_text(json.dumps(final))
""")

SWEEP = {
    "name": "tiny",
    "args": ["--preset", "cpu-tiny"],
    "base": {"experiment.kl_coef": 1.0e-5},
    "grid": {
        "algo": ["grpo"],
        "reward": {"cer": {"neg_cer": 1.0}, "cer_sim": {"neg_cer": 1.0, "speaker_sim": 0.5}},
        "seed": [0, 1],
    },
    "metrics": ["reward/total", "kl"],
}


@pytest.fixture
def setup(tmp_path):
    script = tmp_path / "fake_rl.py"
    script.write_text(FAKE_RUN)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    root = tmp_path / "runs"
    command = (f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} "
               "--experiment {experiment} --algo {algo} --workdir {workdir}")
    argv = ["--experiment", "tts", "--sweep", str(sweep), "--workdir", str(root),
            "--command", command]
    return argv, root


def _invocations(run_dir):
    return (run_dir / "invocations.log").read_text().splitlines()


def test_sweep_end_to_end_and_resume(setup, monkeypatch, capsys):
    argv, root = setup
    names = [f"algo-grpo__reward-{r}__seed-{s}" for r in ("cer", "cer_sim") for s in (0, 1)]

    # Dry run: commands printed, nothing written.
    assert ablate.main(argv + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(f"[todo] {n}" in out for n in names) and not root.exists()
    assert "--set 'experiment.rewards={neg_cer: 1.0, speaker_sim: 0.5}'" in out

    # One run crashes: exit 1, no DONE for it, the others are summarized.
    failing = names[3]
    monkeypatch.setenv("FAKE_FAIL", failing)
    assert ablate.main(argv) == 1
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(names)
    assert not (root / failing / "DONE").exists()
    assert all((root / n / "DONE").exists() for n in names[:3])
    assert f"`{failing}`" in (root / "summary.md").read_text()

    # Second invocation: only the unfinished run runs again.
    monkeypatch.delenv("FAKE_FAIL")
    assert ablate.main(argv) == 0
    assert [len(_invocations(root / n)) for n in names] == [1, 1, 1, 2]
    argv0 = json.loads(_invocations(root / names[1])[0])["argv"]
    assert argv0[argv0.index("--algo") + 1] == "grpo"
    assert "--preset" in argv0 and "train.seed=1" in argv0
    assert "experiment.kl_coef=1.0e-05" in argv0

    # Table: mean ± sample std over the two seeds, from the fake script's formula.
    rows = list(csv.DictReader((root / "summary.csv").open()))
    assert [r["setting"] for r in rows] == ["algo-grpo__reward-cer", "algo-grpo__reward-cer_sim"]
    for row, weight in zip(rows, (1.0, 1.5), strict=True):
        assert row["reward"] == row["setting"].rsplit("-", 1)[1] and row["n_seeds"] == "2"
        finals = [weight + 0.1 * seed for seed in (0, 1)]
        kls = [0.05 * (1 + seed) for seed in (0, 1)]
        assert float(row["reward/total_mean"]) == pytest.approx(np.mean(finals))
        assert float(row["reward/total_std"]) == pytest.approx(np.std(finals, ddof=1))
        assert float(row["kl_mean"]) == pytest.approx(np.mean(kls))
        assert float(row["kl_std"]) == pytest.approx(np.std(kls, ddof=1))
    md = (root / "summary.md").read_text()
    assert "| algo-grpo__reward-cer_sim | grpo | cer_sim | 2 | 1.55 ± 0.071 | 0.075 ± 0.035 |" in md
    assert "Unfinished" not in md

    # Curves: the crashed-then-resumed run logged steps 0-2 twice; the last record wins.
    log = ablate.read_metrics_log(root / failing)
    assert sorted(log) == [0, 1, 2, 3, 4]
    runs = ablate.expand(ablate.load_sweep(argv[3]), root)
    curve = ablate.curves(runs, "kl")["algo-grpo__reward-cer_sim"]
    assert curve[0] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(curve[1], [0.015 * (s + 1) for s in range(5)])
    for png in ("curves.png", "final_metrics.png"):
        data = (root / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.parametrize("value", [1e-5, 0.1, 3, "grpo", "yes", True, None, [0.1, 2],
                                   {"neg_cer": 1.0, "speaker_sim": 0.5}])
def test_override_arg_round_trips_through_config_parser(value):
    key, parsed = parse_override(ablate.override_arg("experiment.x", value))
    assert key == "experiment.x" and parsed == value and type(parsed) is type(value)


def test_bad_sweeps_name_file_and_field(tmp_path, capsys):
    cases = {
        "unknown.yaml": {"grid": {"seed": [0]}, "algo": "grpo", "grids": {}},
        "noalgo.yaml": {"grid": {"seed": [0]}},
        "reward.yaml": {"grid": {"reward": [1.0]}, "algo": "grpo"},
        "clash.yaml": {"grid": {"seed": [0]}, "algo": "dpo", "base": {"seed": 1}},
        "dupes.yaml": {"grid": {"x.beta": [0.1, "0.1"]}, "algo": "dpo"},
        "seedclash.yaml": {"grid": {"seed": [0, 1]}, "algo": "dpo", "base": {"train.seed": 3}},
    }
    expected = {"unknown.yaml": "(top level): expected keys among",
                "noalgo.yaml": "algo: expected an algorithm name",
                "reward.yaml": "grid.reward: expected reward mixes",
                "clash.yaml": "base: expected keys not also swept",
                "dupes.yaml": "grid.x.beta: expected values with distinct labels",
                "seedclash.yaml": "base: expected keys not also swept in grid, got ['train.seed']"}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        assert ablate.main(["--experiment", "tts", "--sweep", str(path), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and expected[name] in err, err


def test_unstartable_command_fails_the_run_via_the_chorus_cli(setup, capsys):
    from chorus import cli

    argv, root = setup
    argv = argv[:-1] + ["/nonexistent/rl-binary --workdir {workdir}"]
    assert cli.main(["ablate", *argv]) == 1
    assert "could not start" in capsys.readouterr().err
    assert not any(root.glob("*/DONE"))
    assert "0/4 runs finished" in (root / "summary.md").read_text()


def test_shared_sets_join_every_run_and_may_not_name_a_swept_key(setup, capsys):
    argv, root = setup
    shared = ["--set", "experiment.init_from=/runs/tts", "--set", "experiment.kl_coef=0.5"]
    assert ablate.main(argv + ["--dry-run", *shared]) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if line.startswith("    ")]
    assert len(commands) == 4
    for line in commands:
        assert "--set experiment.init_from=/runs/tts" in line
        assert "experiment.kl_coef=0.5" in line and "1.0e-05" not in line  # replaces base
    for key in ("train.seed=3", "experiment.rewards={neg_cer: 1.0}"):
        assert ablate.main(argv + ["--dry-run", "--set", key]) == 2
        assert "expected a key the sweep does not vary" in capsys.readouterr().err
    assert ablate.main(argv + ["--dry-run", "--set", "novalue"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("sweep_file, experiment, runs, rewards", [
    ("experiments/tts/ablation.yaml", "tts", 18, {"tts_cer"}),
    ("experiments/realtime/ablation.yaml", "realtime", 9,
     {"judge", "reward_model", "persona_rules", "persona_consistent", "persona_fact"}),
])
def test_the_modes_sweep_files_expand_into_valid_rl_settings(sweep_file, experiment, runs,
                                                             rewards, tmp_path):
    import experiments.judge.rewards  # noqa: F401  (each mode's components, registered)
    import experiments.realtime.rewards  # noqa: F401
    import experiments.reward_model.rewards  # noqa: F401
    import experiments.tts.rewards  # noqa: F401
    from chorus.rl.rewards import RewardMixConfig

    sweep = ablate.load_sweep(sweep_file)
    expanded = ablate.expand(sweep, tmp_path)
    assert len(expanded) == runs and len({r.name for r in expanded}) == runs
    assert len({r.seed for r in expanded}) == 3  # every setting over 3 seeds
    for run in expanded:
        mix = RewardMixConfig.from_mapping(run.overrides[sweep.reward_key])
        assert rewards <= {t.name for t in mix.terms}
        trained = {k for k, v in run.overrides[sweep.reward_key].items()
                   if (v["weight"] if isinstance(v, dict) else v) > 0}
        assert trained  # each arm trains on something
    if experiment == "realtime":  # one arm per reward, the others logged at weight 0
        arms = {r.labels["reward"]: r.overrides[sweep.reward_key] for r in expanded}
        assert set(arms) == {"judge", "checker", "bradley_terry"}
        assert arms["judge"]["judge"]["weight"] == 1 and arms["judge"]["reward_model"][
            "weight"] == 0
        assert arms["checker"]["persona_consistent"] == 1
        assert arms["bradley_terry"]["reward_model"]["weight"] == 1
