"""`chorus bench verify-cost`: one row per number of drafts, each checked against greedy."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_one_row_per_k_with_greedy_as_the_unit(tiny_asr_run, tmp_path, capsys):
    from chorus.cli import main

    out = tmp_path / "cost.json"
    assert main(["bench", "verify-cost", "--workdir", str(tiny_asr_run), "--split", "test",
                 "--utterances", "2", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["utterances"] == 2
    assert [r["k"] for r in rows] == [0, 1, 2]  # the tiny run has 2 MTP heads
    assert all(r["identical_to_greedy"] for r in rows)
    greedy = rows[0]
    assert greedy["wall_step_cost_vs_greedy"] == greedy["cpu_step_cost_vs_greedy"] == 1.0
    assert greedy["cpu_decode_phase_speedup"] == 1.0
    # a verify step commits at least the one token a greedy step commits, so the same output
    # never takes more steps
    for row in rows:
        assert row["tokens_per_step"] >= 1.0
        assert row["decode_steps"] <= greedy["decode_steps"]
    printed = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[0] for line in printed] == ["| 0", "| 1", "| 2"]


def test_a_run_without_heads_is_refused(tiny_asr_run):
    from experiments.asr.transcriber import load_transcriber
    from experiments.benchmarks.verify_cost import measure

    transcriber, _ = load_transcriber(str(tiny_asr_run))
    with pytest.raises(ValueError, match="no MTP heads"):
        measure(transcriber.with_decode(num_draft_tokens=0), [], repeats=1)
