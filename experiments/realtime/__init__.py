"""Realtime spoken dialogue: the supervised dialogue regime and the streaming session.

    regime.py    DialogueRegime: <chat> <persona> card <user> <audio>xN <assistant> answer <eos>
                 (the data pipeline's dialogue turns)
    streaming_mel.py  log-mel of a stream, frame-exact with chorus.audio.mel.log_mel
    session.py   Session: 80 ms audio chunks -> streaming encoder -> KV cache (extend); at
                 end of speech the answer: text, <tts_start>, codes -> streamed audio packets;
                 barge-in, history across turns, a context limit that evicts old turns
    cli.py       `chorus chat --workdir W --persona card.json q1.wav [q2.wav ...] --out DIR`

The turn detector is chorus.audio.vad (VoiceActivityDetector).
The latency benchmark is `chorus bench realtime-latency`
(experiments/benchmarks/realtime_latency.py).
"""

from __future__ import annotations

from experiments.realtime.regime import DialogueRegime

# The verbs this mode adds to the `chorus` command (read by chorus.cli without importing us).
COMMANDS = {"chat": ("experiments.realtime.cli:main",
                     "spoken dialogue with a run: persona card + question WAVs -> answers")}

__all__ = ["COMMANDS", "DialogueRegime"]
