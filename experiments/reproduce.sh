#!/usr/bin/env bash
# The main job on the embedded default corpus (`make reproduce`), every mode's stages:
#   1. synthesize the eSpeak NG corpus (6 h of speech, resumable) + its SentencePiece tokenizer
#   2. ASR: train the cpu-tiny backbone (with its CTC head), then its multi-token prediction
#      heads on the frozen backbone (a second run, the ASR model every later stage uses),
#      evaluate (WER/CER on
#      test, compositional, held-out-voice and out-of-range-prosody splits with verified
#      decoding, CTC-greedy WER, joint CTC/attention decoding verified and by beam search,
#      acceptance, verified-vs-greedy wall-clock), transcribe (joint decoding) a WAV
#      spoken by a voice/rate outside the training distribution, a long-form WAV (SRT with
#      word times) and silence / noise (empty transcripts)
#   3. codec: train its four stages (speaker, tokenizer, flow, vocoder) through the one
#      trainer — the corpus is encoded once into a record cache of codes beside the dataset —
#      and evaluate resynthesis (CER, speaker similarity, MCD, EER, streaming)
#   4. TTS: supervised training on the codec's codes of the corpus (the batches read the
#      record cache; instructions rephrased, a speaker clip of another utterance, control
#      dropout), then RL from it (GRPO and DPO on sampled pairs, rewards: intelligibility by the
#      chorus ASR, speaker similarity, control adherence, length), then the evaluation table
#      (two ASR judges, DNSMOS, similarity seen / unseen voices, controls, RTF, first packet)
# Every step resumes: re-running after an interruption continues where it stopped.
# The platform is the caller's (the Makefile sets JAX_PLATFORMS=cpu on this CPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/reproduce}
STEPS=${STEPS:-1800}  # ASR backbone steps (batch 4)
HEAD_STEPS=${HEAD_STEPS:-1500}  # MTP heads on the frozen backbone (self-distilled)
TTS_STEPS=${TTS_STEPS:-1200}
TTS_RL_STEPS=${TTS_RL_STEPS:-12}
CHORUS=.venv/bin/chorus
PY=.venv/bin/python
CORPUS="$RUN_DIR/corpus"

echo "== corpus"
$CHORUS data synth --out "$CORPUS" --hours 6 --seed 0 --no-progress

echo "== ASR"
# The backbone trains without MTP heads (a step costs 0.6x, and the heads did not help it
# learn) and with a character CTC beside the piece CTC (README, ASR recipe); the heads then
# learn to draft the backbone's own greedy tokens on the frozen backbone.
$CHORUS train --experiment asr --preset cpu-tiny --workdir "$RUN_DIR/asr_backbone" \
  --data "$CORPUS" --set experiment.mtp=null --set experiment.char_ctc_weight=1.0 \
  --set train.batch_size=4 \
  --set train.steps="$STEPS" --set train.eval_every=600 --set train.checkpoint_every=200 \
  --set train.log_every=50
$CHORUS train --experiment asr --preset cpu-tiny --workdir "$RUN_DIR/asr" --data "$CORPUS" \
  --set experiment.mtp_stage=heads --set experiment.backbone_from="$RUN_DIR/asr_backbone" \
  --set experiment.mtp.targets=backbone \
  --set train.batch_size=4 --set train.steps="$HEAD_STEPS" --set train.eval_every="$HEAD_STEPS" \
  --set train.checkpoint_every=100 --set train.log_every=50
$CHORUS eval --workdir "$RUN_DIR/asr" > "$RUN_DIR/asr_eval.json"
cat "$RUN_DIR/asr/eval/asr_eval.md"

# A speaking rate (115 wpm) and pitch (85) outside the corpus ranges (130-210 wpm, 25-75).
$PY - "$RUN_DIR/unseen_voice.wav" <<'PY'
import sys

from chorus.audio.io import write_wav
from data_pipelines.synthesis import synthesize

wave, meta = synthesize("turn off the lights in the kitchen", voice="en-gb-scotland+f2",
                        rate=115, pitch=85)
write_wav(sys.argv[1], wave)
print(f"wrote {sys.argv[1]}: {meta.duration:.2f} s, voice {meta.voice}, rate {meta.rate} wpm")
PY

# Long-form (three sentences with pauses, longer than the model's 5.6 s window) with word
# timestamps as SRT, and no speech (silence, white noise): empty transcripts, nothing decoded.
$PY - "$RUN_DIR/long.wav" "$RUN_DIR/silence.wav" "$RUN_DIR/noise.wav" <<'PY'
import sys

import numpy as np

from chorus.audio.io import write_wav
from data_pipelines.synthesis import synthesize

gap = np.zeros(6400, np.float32)  # 0.4 s pauses
parts = [synthesize(t, voice=v)[0] for t, v in (
    ("wake me up at seven on friday", "en-us+m3"), ("the best tea in oslo is near the station",
                                                     "en-gb+f3"),
    ("please close the window in the kitchen", "en-029+m1"))]
write_wav(sys.argv[1], np.concatenate([p for part in parts for p in (part, gap)]))
write_wav(sys.argv[2], np.zeros(32000, np.float32))
write_wav(sys.argv[3], np.random.default_rng(0).normal(0, 0.05, 32000).astype(np.float32))
PY
# One call (one checkpoint load) for all four: SRT files with word times in transcripts/.
$CHORUS transcribe --workdir "$RUN_DIR/asr" --words --format srt --out "$RUN_DIR/transcripts" \
  "$RUN_DIR/unseen_voice.wav" "$RUN_DIR/long.wav" "$RUN_DIR/silence.wav" "$RUN_DIR/noise.wav"
for f in unseen_voice long silence noise; do
  echo "-- $f.srt ($(wc -c < "$RUN_DIR/transcripts/$f.srt") bytes)"; cat "$RUN_DIR/transcripts/$f.srt"
done

echo "== codec"
$CHORUS train --experiment codec --workdir "$RUN_DIR/codec" --data "$CORPUS"
$CHORUS codec eval --workdir "$RUN_DIR/codec" > /dev/null
cat "$RUN_DIR/codec/eval.md"

echo "== TTS (supervised, on the codec's codes)"
$CHORUS codec encode --workdir "$RUN_DIR/codec" --split validation
$CHORUS codec encode --workdir "$RUN_DIR/codec" --split test
CACHE_KEY=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["producer_key"])' \
  "$RUN_DIR/codec/corpus_codes.json")
# The TTS settings every TTS run shares: its corpus, codes, codec and intelligibility judge.
TTS_SETS=(--set experiment.data_dir="$CORPUS" --set experiment.cache_key="$CACHE_KEY"
          --set experiment.codec_run="$RUN_DIR/codec" --set experiment.asr_run="$RUN_DIR/asr")
# Two audio slots per packed row: in 40 measured steps no row held more than two examples
# (the same batches as with four slots), and every slot costs an encoder pass.
$CHORUS train --experiment tts --preset cpu-tiny --workdir "$RUN_DIR/tts" --data "$CORPUS" \
  "${TTS_SETS[@]}" --set experiment.control_dropout=0.15 --set train.steps="$TTS_STEPS" \
  --set train.max_audio_clips=2 \
  --set train.eval_every="$TTS_STEPS" --set train.checkpoint_every=200 --set train.log_every=50

echo "== TTS RL (GRPO, and DPO on sampled pairs, from the SFT run)"
REWARDS='experiment.rewards={tts_cer: 1.0, tts_speaker_sim: 0.5, tts_control: 0.5, tts_length: 0.5}'
RL_SETS=("${TTS_SETS[@]}" --set "$REWARDS" --set experiment.max_new_tokens=160
         --set experiment.eval_prompts=8 --set train.steps="$TTS_RL_STEPS"
         --set train.checkpoint_every=4 --set train.log_every=2)
$CHORUS rl --experiment tts --algo grpo --init-from "$RUN_DIR/tts" --workdir "$RUN_DIR/tts_grpo" \
  --preset cpu-tiny "${RL_SETS[@]}" --set experiment.group_size=4 --quiet
$CHORUS rl --experiment tts --algo dpo --init-from "$RUN_DIR/tts" --workdir "$RUN_DIR/tts_dpo" \
  --preset cpu-tiny "${RL_SETS[@]}" --set experiment.dpo.pairs=sampled \
  --set experiment.dpo.samples=4 --set experiment.dpo.margin=0.05 --quiet

echo "== TTS evaluation (SFT vs each RL run)"
$CHORUS tts-eval --runs "$RUN_DIR/tts" "$RUN_DIR/tts_grpo" "$RUN_DIR/tts_dpo" \
  --out "$RUN_DIR/tts_eval" --set experiment.eval_examples=8 > /dev/null
cat "$RUN_DIR/tts_eval/test/tts_eval.md"
