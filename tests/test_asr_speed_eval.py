"""The ASR table's speed rows (experiments.asr.evaluate.speed_eval) on a stub transcriber:
every decoder timed on the same utterances, passes interleaved round-robin, the fastest pass
of each counted, joint rows only for a run with a CTC head."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from chorus.config import load_config
from chorus.vocab import VocabLayout
from experiments.asr import evaluate

CONFIG = load_config("cpu-tiny")
LAYOUT = VocabLayout.from_model_config(CONFIG.model)
MAX_FRAMES = 16


class StubTranscriber:
    """decode() records the mode and advances a fake clock by the mode's cost per row."""

    def __init__(self, ctc: bool, clock):
        self.asr = types.SimpleNamespace(ctc_head=object() if ctc else None)
        self.calls, self.clock = [], clock
        self.cost = {"prefill": 1.0, "greedy": 4.0, "verified": 2.0, "joint_greedy": 5.0,
                     "joint": 3.0}

    def decode(self, request, mode):
        self.calls.append(mode)
        self.clock[0] += self.cost[mode] * len(request["lengths"])
        return types.SimpleNamespace(tokens=jnp.zeros((1,)))


def _examples(n):
    return [{"prompt_tokens": np.array([LAYOUT.eos_id]), "audio_features": np.zeros((4, 128)),
             "audio_mask": np.ones(4, bool)} for _ in range(n)]


@pytest.mark.parametrize("ctc", [True, False])
def test_speed_rows_time_every_decoder_round_robin(monkeypatch, ctc):
    import experiments.asr.transcriber as transcriber_module

    clock = [0.0]  # `timed` reads this clock: each pass costs exactly what the stub says
    monkeypatch.setattr(transcriber_module.time, "perf_counter", lambda: clock[0])
    stub = StubTranscriber(ctc, clock)
    rows = evaluate.speed_eval(stub, _examples(8), LAYOUT, MAX_FRAMES)
    modes = ["prefill", "greedy", "verified", *(["joint_greedy", "joint"] if ctc else [])]
    one = rows["batch_1"]
    # 8 one-row requests per pass: seconds = cost * 8, the same every pass
    assert one["greedy_seconds"] == 32 and one["verified_seconds"] == 16
    assert one["speedup"] == 2 and one["decode_phase_speedup"] == (32 - 8) / (16 - 8)
    assert ("joint_seconds" in one) == ctc
    if ctc:
        assert one["joint_speedup"] == 40 / 24 and one["joint_decode_phase_speedup"] == 2
    # after one compile call per mode, the timed passes cycle through the modes
    timed = stub.calls[len(modes):len(modes) + 8 * len(modes) * evaluate.SPEED_REPEATS]
    per_pass = [timed[i * 8] for i in range(len(modes) * evaluate.SPEED_REPEATS)]
    assert per_pass == modes * evaluate.SPEED_REPEATS
    assert rows["batch_8"]["utterances"] == 8
