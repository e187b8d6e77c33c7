"""The realtime mode end to end at tiny size on the tiny corpus' dialogue turns:
`chorus train --experiment realtime` from the tiny ASR run's backbone, `chorus eval` (the
persona table with corpus and held-out cards), a tiny judge, and `chorus rl --experiment
realtime --algo grpo` against it with the interaction rules and the checker logged at
weight 0."""

import json

import numpy as np
import pytest
from asr_runs import ASR, sets

from chorus.rl import cli as rl_cli
from chorus.training.cli import eval_main, train_main

SIZES = [o for o in ASR if not o.startswith("train.seq_len")] + ["train.seq_len=256"]
# The tiny corpus' test split has no dialogue turn; its validation split has three.
RUN = [*SIZES, "train.log_every=1", "train.checkpoint_every=1000", "train.eval_steps=1",
       "experiment.eval_splits=[validation]", "experiment.eval_examples=2",
       "experiment.max_answer_tokens=4", "audio.chunk_size=4"]


@pytest.fixture(scope="module")
def sft_run(tiny_asr_corpus, tiny_asr_run, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("realtime") / "sft"
    assert train_main(["--experiment", "realtime", "--workdir", str(workdir), "--data",
                       tiny_asr_corpus, "--quiet",
                       *sets(*RUN, "train.steps=2",
                             f"experiment.backbone_from={tiny_asr_run}")]) == 0
    return workdir


@pytest.mark.slow
def test_sft_trains_on_dialogue_turns_and_reports_the_persona_table(sft_run):
    with open(sft_run / "metrics.jsonl") as f:
        steps = [json.loads(line) for line in f if '"event"' not in line and "ce" in line]
    assert steps and all(np.isfinite(r["loss"]) and r["tokens"] > 0 for r in steps)
    assert eval_main(["--workdir", str(sft_run)]) == 0
    report = json.loads((sft_run / "eval" / "realtime_eval.json").read_text())["persona"]
    assert set(report) == {"validation", "validation, held-out cards",
                           "validation, out of scope"}
    # out-of-scope requests: the split's other utterances, each declined in its card's style
    from data_pipelines.personas import DECLINES
    from experiments.realtime.checker import OUT_OF_SCOPE, request_kind

    scope = report.pop("validation, out of scope")
    assert scope["turns"] == 2 and scope["fact_by_kind"] == {}
    assert all(request_kind(s["question"]) == OUT_OF_SCOPE and s["reference"] in
               DECLINES.values() for s in scope["samples"])
    for table in report.values():
        assert table["turns"] == 2
        assert all(0 <= table[k] <= 1 for k in ("fact", "style", "in_character", "exact"))
        assert table["consistent"] <= min(table["fact"], table["style"])
    # the held-out table asks the same questions with other cards
    a, b = (report[k]["samples"] for k in ("validation", "validation, held-out cards"))
    assert [s["question"] for s in a] == [s["question"] for s in b]
    assert [s["reference"] for s in a] != [s["reference"] for s in b]
    md = (sft_run / "eval" / "realtime_eval.md").read_text()
    assert md.startswith("| split | turns | fact |") and "held-out cards" in md


@pytest.fixture(scope="module")
def judge_and_grpo(sft_run, tiny_asr_corpus, tmp_path_factory):
    """A 1-step judge and a 1-step GRPO run against it from the SFT run: (judge, grpo)."""
    root = tmp_path_factory.mktemp("realtime_rl")
    judge = root / "judge"
    judge_sizes = [o for o in SIZES if not o.startswith("train.seq_len")]
    assert train_main(["--experiment", "judge", "--workdir", str(judge), "--data",
                       tiny_asr_corpus, "--quiet",
                       *sets(*judge_sizes, "train.seq_len=384", "train.steps=1",
                             "train.checkpoint_every=1000", "train.eval_every=1000",
                             "experiment.max_rationale_tokens=4")]) == 0
    rewards = (f"experiment.rewards={{judge: {{weight: 1, run: {judge}}}, persona_rules: 0.5, "
               f"persona_fact: 0, judge_agreement: {{weight: 0, run: {judge}}}}}")
    workdir = root / "grpo"
    argv = ["--experiment", "realtime", "--algo", "grpo", "--workdir", str(workdir),
            "--init-from", str(sft_run), "--quiet",
            *sets(*RUN, "train.steps=1", "experiment.group_size=2",
                  "experiment.rl_train_pool=4", "experiment.rl_eval_pool=2",
                  "experiment.eval_prompts=2", rewards)]
    assert rl_cli.main(argv) == 0  # data_dir comes from the --init-from run
    return judge, workdir


@pytest.mark.slow
def test_grpo_against_the_judge_logs_the_checker_it_is_not_trained_on(judge_and_grpo,
                                                                       tiny_asr_corpus):
    _, workdir = judge_and_grpo
    final = json.loads((workdir / "final_metrics.json").read_text())
    for when in ("initial", "final"):
        assert 0 < final[f"{when}/heldout/greedy/reward/judge"] < 1
        assert final[f"{when}/heldout/greedy/reward/persona_fact"] in (0, 0.5, 1)
        assert 0 <= final[f"{when}/heldout/greedy/reward/persona_rules"] <= 1
        assert final[f"{when}/heldout/greedy/reward/judge_agreement"] in (0, 0.5, 1)
    with open(workdir / "metrics.jsonl") as f:
        steps = [json.loads(line) for line in f if '"reward/persona_fact"' in line]
    assert steps  # the weight-0 checker is logged during training too
    report = json.loads((workdir / "eval" / "realtime_eval.json").read_text())["persona"]
    assert report["validation, held-out cards"]["turns"] == 2
    config = json.loads((workdir / "config.json").read_text())["experiment"]
    assert config["data_dir"] == tiny_asr_corpus  # experiments.realtime.RL_INHERITED


@pytest.mark.slow
def test_a_split_without_dialogue_turns_is_named(sft_run):
    assert eval_main(["--workdir", str(sft_run), "--set", "experiment.eval_splits=[test]"]) == 2


@pytest.mark.slow
def test_realtime_notebook_runs_on_the_tiny_runs(sft_run, judge_and_grpo, monkeypatch):
    from test_notebooks import ROOT, _execute

    judge, grpo = judge_and_grpo
    text = _execute(f"{ROOT}/notebooks/realtime.ipynb",
                    {"CHORUS_RT_SFT": str(sft_run), "CHORUS_RT_JUDGE": str(judge),
                     "CHORUS_RT_RL": str(grpo)}, monkeypatch)
    assert "card:      name: " in text and "checker:   fact " in text
    assert text.count("    rationale: ") == 3 and text.count("p(yes)/(p(yes)+p(no)) = 0.") == 3
    assert "averaged over 4 sampled rationales:" in text
    assert "judge_agreement" in text and "initial held-out:" in text
    assert "plotted 1 steps" in text
