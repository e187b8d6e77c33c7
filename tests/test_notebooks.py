"""The notebooks under notebooks/ are stored without outputs and run top to bottom (nbclient)
on tiny runs, so a walkthrough cannot rot."""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_there_are_notebooks_and_none_is_stored_with_outputs():
    assert {os.path.basename(p) for p in NOTEBOOKS} >= {"quickstart.ipynb", "tts.ipynb",
                                                      "analysis.ipynb", "realtime.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, (
                    f"{path}: strip outputs before committing (jupyter nbconvert "
                    f"--clear-output --inplace {os.path.relpath(path, ROOT)})")


def _available_mb() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) // 1024


def _execute(path, env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # A native crash in the kernel then prints its Python stack into this test's captured stderr.
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")
    nb = nbformat.read(path, as_version=4)
    kernel = {}
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}},
                            on_notebook_start=lambda notebook: kernel.update(
                                process=client.km.provisioner.process))
    try:
        client.execute()
    except DeadKernelError as e:
        # nbclient says only "Kernel died": name how (a signal: -9 = SIGKILL, the OOM killer's;
        # -11 = SIGSEGV, with the faulthandler stack above) and what memory was left.
        process = kernel.get("process")
        status = None if process is None else process.poll()
        raise AssertionError(f"{os.path.relpath(path, ROOT)}: the kernel died with exit status "
                             f"{status}; {_available_mb()} MB of memory available now") from e
    return "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                     for out in cell.outputs)


def test_a_kernel_that_dies_is_reported_with_its_exit_status(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")])
    path = tmp_path / "dies.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(AssertionError, match=r"the kernel died with exit status -9; \d+ MB"):
        _execute(str(path), {}, monkeypatch)


@pytest.mark.slow
def test_quickstart_runs_on_a_tiny_asr_run(tiny_asr_run, tmp_path, monkeypatch):
    wav = tmp_path / "question.wav"
    text = _execute(os.path.join(ROOT, "notebooks", "quickstart.ipynb"),
                    {"CHORUS_QUICKSTART_RUN": str(tiny_asr_run),
                     "CHORUS_QUICKSTART_WAV": str(wav)}, monkeypatch)
    assert wav.exists()  # the notebook spoke one when it was missing
    assert "verified output == greedy output" in text
    assert "step 0: drafts [" in text and "tokens per step" in text


@pytest.mark.slow
def test_tts_notebook_runs_on_the_tiny_tts_stack(tiny_tts_stack, monkeypatch):
    text = _execute(os.path.join(ROOT, "notebooks", "tts.ipynb"),
                    {"CHORUS_TTS_RUN": tiny_tts_stack["tts"],
                     "CHORUS_TTS_CODEC": tiny_tts_stack["codec"], "CHORUS_TTS_SAMPLES": "3"},
                    monkeypatch)
    assert "prompt: <tts> <instruction>(" in text and "<tts_start>" in text
    assert text.count("codes, ") >= 3  # one line per sample
    for name in ("tts_code_cer", "tts_speaker_sim", "tts_control", "tts_length", "total"):
        assert name in text
    assert "chosen: seed" in text or "no pair: the samples' rewards differ" in text


@pytest.mark.slow
def test_analysis_notebook_runs_on_the_tiny_asr_run(tiny_asr_run, tiny_asr_corpus, monkeypatch):
    text = _execute(os.path.join(ROOT, "notebooks", "analysis.ipynb"),
                    {"CHORUS_ANALYSIS_RUN": str(tiny_asr_run),
                     "CHORUS_ANALYSIS_DATA": tiny_asr_corpus, "CHORUS_ANALYSIS_PLAYERS": "4"},
                    monkeypatch)
    assert "reference:" in text and "greedy on the attacked clip:" in text
    # efficiency, printed by the notebook: the Shapley values add up to f(N) - f(empty)
    line = next(s for s in text.splitlines() if s.startswith("f(N) = "))
    parts = line.split()
    assert abs(float(parts[2]) - float(parts[5]) - float(parts[-1])) < 2e-3
    assert text.count("  0.") >= 2  # one row per order m/n = 0.00 .. 0.50
