"""ASR: speech in, transcript out. One regime of the shared backbone, by job:

    settings.py     AsrSettings (`--set experiment.<field>=...`, read with settings_from)
    regime.py       the token layout   <asr> <audio>xN <transcript> | text ... <eos>
                    (N = one placeholder per 80 ms of audio; loss_mask on the target part)
    model.py        backbone + MTP heads + CTC head; the loss: transcript CE
                    + lambda/k * sum_j CE_j of the k MTP heads + ctc_weight * CTC
    experiment.py   `chorus train --experiment asr`: data, loss, eval, assets
    transcriber.py  decoding modes: verified multi-token (the MTP heads draft k tokens, one
                    backbone forward verifies them; output identical to greedy), greedy, beam,
                    ctc (the CTC head's best path); CTC word times; params-only loading
    longform.py     audio longer than the window: cut at pauses, overlapping windows stitched
    subtitles.py    SRT cues from words or segments
    speech_gate.py  no speech, no words: the gate in front of decoding, and its eval
    ctc_timestamps.py  words and their times from a CTC alignment
    ctc_eval.py     CTC greedy / beam vs the decoder; joint CTC/attention rescoring
    scoring.py      log p(transcript | clip), the value function of the analysis toolkit
    adversarial.py  PGD attacks on the log-mel or the waveform
    evaluate.py     WER / CER per split, accepted tokens per step, verified-vs-greedy timing
    rl.py           `chorus rl --experiment asr`: utterances as audio prompts, -WER / -CER
    cli.py          `chorus transcribe` (many files, any length, json / text / srt)

    chorus train --experiment asr --preset cpu-tiny --workdir runs/asr --data DATA_DIR
    chorus eval  --workdir runs/asr
    chorus transcribe --workdir runs/asr speech.wav
"""

from __future__ import annotations

# The verbs this mode adds to the `chorus` command (read by chorus.cli without importing us).
COMMANDS = {"transcribe": ("experiments.asr.cli:main", "transcribe audio files")}
# `chorus rl --init-from RUN` takes these settings from RUN unless set (chorus.rl.init_from.
# inherit_settings, into the RL run's config.json): the corpus, the transcript form the model
# learned, and what shapes and feeds the heads riding along.
RL_INHERITED = ("data_dir", "asr_target", "mtp", "ctc_weight", "ctc_frames")


def build(config):
    """The Experiment for this config: RL of the ASR backbone when `chorus rl` set
    experiment.algo, else supervised ASR training."""
    if "algo" in config.experiment:
        from experiments.asr.rl import build_rl

        return build_rl(config)
    from experiments.asr.experiment import build as build_asr

    return build_asr(config)
