"""Test setup: 8 fake CPU devices, set before jax is imported anywhere."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    flags += " --xla_force_host_platform_device_count=8"
# XLA:CPU aborts the process (SIGABRT, `rendezvous.cc: Termination timeout ... only 7 of them
# arrived`) when one of the 8 fake devices reaches a collective over 40 s after the others. On
# 2 cores that happened in test_rl_cli's GRPO run (the init program, whose device 0 then ran
# the init-from host callback; it takes its values as an argument now). Late is not wrong
# here: wait as long as a test may run.
if "xla_cpu_collective_call_terminate_timeout_seconds" not in flags:
    flags += (" --xla_cpu_collective_call_terminate_timeout_seconds=900"
              " --xla_cpu_collective_timeout_seconds=900")
os.environ["XLA_FLAGS"] = flags.strip()
# numba (librosa's pyin and friends) caches compiled functions beside librosa's sources. Two
# pytest-xdist workers compiling the same function at once left an index and code files that
# did not match, and every later process that loaded them segfaulted (in
# librosa.util.localmin). Each worker gets its own cache; the processes a test starts inherit it.
if "NUMBA_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _numba_cache = tempfile.mkdtemp(prefix="chorus-numba-cache-")
    os.environ["NUMBA_CACHE_DIR"] = _numba_cache
    atexit.register(shutil.rmtree, _numba_cache, ignore_errors=True)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_asr_corpus(tmp_path_factory):
    """A 0.02 h synthesized corpus (128-piece tokenizer) shared by the ASR tests."""
    from data_pipelines.corpus_plan import CorpusConfig
    from data_pipelines.synth_corpus import synth_corpus

    out = str(tmp_path_factory.mktemp("asr_corpus"))
    synth_corpus(out, CorpusConfig(seed=0, hours=0.02, shard_size=10), workers=1,
                 vocab_size=128, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_asr_run(tiny_asr_corpus, tmp_path_factory):
    """A 3-step `chorus train --experiment asr` run on the tiny corpus (MTP k = 2), shared by
    the ASR CLI tests and the notebooks."""
    import json

    import numpy as np
    from asr_runs import RUN, sets

    from chorus.training.cli import train_main

    workdir = tmp_path_factory.mktemp("asr")
    assert train_main(["--experiment", "asr", "--workdir", str(workdir), "--data",
                       tiny_asr_corpus, "--quiet", *sets(*RUN, "train.steps=3")]) == 0
    with open(workdir / "metrics.jsonl") as f:
        steps = [json.loads(line) for line in f if '"event"' not in line]
    # the hybrid loss: transcript CE + MTP + CTC over the adaptor frames
    assert all(np.isfinite(r["ctc/loss"]) and r["ctc/clips"] > 0 for r in steps)
    return workdir


@pytest.fixture(scope="session")
def tiny_tts_stack(tiny_asr_corpus, tmp_path_factory):
    """A tiny codec (2 steps per stage) + its code cache + a 4-step TTS run on the tiny corpus
    (tests/tts_runs.py): {"data_dir", "codec", "tts", "cache_key"}, shared by the TTS tests."""
    from tts_runs import train_tiny_tts_stack

    return train_tiny_tts_stack(tiny_asr_corpus, str(tmp_path_factory.mktemp("tts_stack")))


@pytest.fixture(scope="session")
def judge_data(tmp_path_factory):
    """A directory holding a 256-piece tokenizer trained on judge texts (what a corpus made by
    `chorus data synth` provides; the judge and the reward model read nothing else from it)."""
    import numpy as np

    from data_pipelines.tokenizer import TOKENIZER_FILENAME, train_tokenizer
    from experiments.judge.labels import KINDS, PERTURBATIONS, RUBRIC, make_example, make_pair

    out = tmp_path_factory.mktemp("judge_data")
    rng = np.random.default_rng(0)
    texts = [RUBRIC]
    for kind in KINDS:
        for _ in range(40):
            ex = make_example(rng, kind)
            texts += [ex.persona.card(), ex.question, ex.answer, ex.rationale]
    for kind in PERTURBATIONS:
        texts += [make_pair(rng, kind).rationale for _ in range(10)]
    train_tokenizer(texts, 256, str(out / TOKENIZER_FILENAME))
    return str(out)


# Every compiled XLA:CPU program keeps ~100 memory mappings of JIT code alive for as long as
# jax's caches hold it. One process running the whole suite compiles thousands of programs and
# would pass the kernel's vm.max_map_count (65530): the next mmap fails and the process aborts
# (SIGABRT, from the allocator, with no Python traceback). Dropping the caches after each module,
# and after any test that leaves the process near the limit, frees those mappings.
_MAPS_HEADROOM = 40_000


def _memory_mappings() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # no procfs: nothing to watch
        return 0


def _drop_compiled_programs() -> None:
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs_per_module():
    yield
    _drop_compiled_programs()


@pytest.fixture(autouse=True)
def _release_compiled_programs_near_the_limit():
    yield
    if _memory_mappings() > _MAPS_HEADROOM:
        _drop_compiled_programs()
