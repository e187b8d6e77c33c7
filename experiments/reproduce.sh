#!/usr/bin/env bash
# The main job on the embedded default corpus (`make reproduce`):
#   1. synthesize the eSpeak NG corpus (6 h of speech, resumable) + its SentencePiece tokenizer
#   2. train the cpu-tiny ASR model with multi-token prediction heads
#   3. evaluate: WER/CER on test + compositional splits with verified decoding, acceptance,
#      and verified-vs-greedy wall-clock, printed as a table
#   4. transcribe a WAV spoken by a voice/rate outside the training distribution
# Every step resumes: re-running after an interruption continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/reproduce}
STEPS=${STEPS:-800}
CHORUS=.venv/bin/chorus
PY=.venv/bin/python


$CHORUS data synth --out "$RUN_DIR/corpus" --hours 6 --seed 0
$CHORUS train --experiment asr --preset cpu-tiny --workdir "$RUN_DIR/asr" \
  --data "$RUN_DIR/corpus" --set train.steps="$STEPS" --set train.eval_every=200 \
  --set train.checkpoint_every=100 --set train.log_every=25
$CHORUS eval --workdir "$RUN_DIR/asr" > "$RUN_DIR/asr_eval.json"
cat "$RUN_DIR/asr/eval/asr_eval.md"

# A speaking rate (115 wpm) and pitch (85) outside the corpus ranges (130-210 wpm, 25-75).
$PY - "$RUN_DIR/unseen_voice.wav" <<'PY'
import sys

import soundfile

from data_pipelines.synthesis import synthesize

wave, meta = synthesize("turn off the lights in the kitchen", voice="en-gb-scotland+f2",
                        rate=115, pitch=85)
soundfile.write(sys.argv[1], wave, 16_000)
print(f"wrote {sys.argv[1]}: {meta.duration:.2f} s, voice {meta.voice}, rate {meta.rate} wpm")
PY
$CHORUS transcribe --workdir "$RUN_DIR/asr" "$RUN_DIR/unseen_voice.wav"
