"""TTS: text (+ an instruction, inline directions and a speaker) in, codec codes out, then
audio through the codec. One regime of the shared backbone, by job:

    settings.py     TtsSettings / TtsRLSettings / SpeechDecoding (`--set experiment.<field>=...`)
    target.py       what a prompt asks for (text, voice, rate, pitch, volume, inline tags),
                    known from the corpus; the RL references
    prompt.py       the one TTS prompt (training, synthesis and RL build it alike)
    experiment.py   `chorus train --experiment tts`: the token layout
                    <tts> <instruction> .. <speaker> .. <text> .. <tts_start> | codes .. <tts_end>
                    and the supervised loss on the codes (+ `chorus eval`)
    synthesizer.py  text -> codes (sampling restricted to the audio codes, repetition
                    penalty, stop at <tts_end>, a length guard) -> audio through the codec,
                    offline or streamed chunk by chunk; the Python API
    cli.py          `chorus synthesize` (one text, or a JSONL batch)
    instructions.py instructions in varied phrasings; the held-out voices / combinations
    speaker_clips.py the speaker prompt: another utterance of the voice, through the encoder
    controls.py     f0 / rate / loudness / voicing of a wave, per inline-tagged stretch
    listen.py       codes -> audio once per completion (what the listening rewards hear)
    rewards.py      tts_cer, tts_code_cer, tts_speaker_sim, tts_control[_*], tts_length
    rl.py           `chorus rl --experiment tts --algo dpo|grpo` (ablation.yaml: the sweep)
    judges.py       ASR judges not trained here (pocketsphinx), DNSMOS, speaker similarity
    evaluate.py     `chorus eval` / `chorus tts-eval`: the Seed-TTS-eval-shaped table

    chorus train --experiment tts --preset cpu-tiny --workdir runs/tts --data DATA_DIR \
        --set experiment.cache_key=KEY --set experiment.codec_run=runs/codec
    chorus synthesize --workdir runs/tts --text "hello (softly) there" --speaker en-gb+f3 out.wav
"""

from __future__ import annotations

# The verbs this mode adds to the `chorus` command (read by chorus.cli without importing us).
COMMANDS = {"synthesize": ("experiments.tts.cli:main", "text to speech with a TTS run"),
            "tts-eval": ("experiments.tts.evaluate:main",
                         "TTS runs side by side: the evaluation table")}
# `chorus rl --init-from RUN` takes these settings from RUN unless set (chorus.rl.init_from.
# inherit_settings, into the RL run's config.json, so the reward classes built from it see the
# corpus, codec and ASR run of the task).
RL_INHERITED = ("data_dir", "cache_key", "codec_run", "asr_run", "speaker_clip_seconds")


def build(config):
    """The Experiment for this config: RL of the TTS backbone when `chorus rl` set
    experiment.algo, else supervised TTS training."""
    if "algo" in config.experiment:
        from experiments.tts.rl import build_rl

        return build_rl(config)
    from experiments.tts.experiment import build as build_tts

    return build_tts(config)
