"""Realtime spoken dialogue: the dialogue regime, its SFT and RL, and the streaming session.

    regime.py    DialogueRegime: <chat> <persona> card <user> <audio>xN <assistant> answer
                 <tts_start> [codes <tts_end>] (the data pipeline's dialogue turns)
    answer_speech.py  every persona answer spoken (eSpeak NG) and encoded by a codec once,
                 cached beside the corpus: the codes of the spoken answer
    settings.py  RealtimeSettings / RealtimeRLSettings (`--set experiment.<field>=...`)
    experiment.py `chorus train --experiment realtime`: SFT on the dialogue turns (from an ASR
                 run's backbone: experiment.backbone_from), the persona table as its eval
    checker.py   the exact persona checker (fact, style, in character) of an answer
    turns.py     dialogue turns as prompts; text answers read back
    evaluate.py  greedy answers -> the persona table (`chorus eval`)
    spoken.py    held-out turns through the session -> the spoken table (`chorus eval`): the
                 answers' audio judged (ASR CER, codec CTC CER, speaker similarity, latency)
    rewards.py   persona_fact, persona_consistent (the checker), persona_rules
    rl.py        `chorus rl --experiment realtime --algo grpo|dpo|ppo` (judge reward + rules)
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
# `chorus rl --init-from RUN` takes these settings from RUN unless set (chorus.rl.init_from).
RL_INHERITED = ("data_dir", "max_answer_tokens")


def build(config):
    """The Experiment for this config: RL of the realtime policy when `chorus rl` set
    experiment.algo, else the dialogue SFT."""
    if "algo" in config.experiment:
        from experiments.realtime.rl import build_rl

        return build_rl(config)
    from experiments.realtime.experiment import build as build_sft

    return build_sft(config)


__all__ = ["COMMANDS", "RL_INHERITED", "DialogueRegime", "build"]
