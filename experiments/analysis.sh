#!/usr/bin/env bash
# The interaction-analysis job on the runs of `make reproduce` (`make analysis`):
#   1. two fine-tunes of the reproduce ASR model from its backbone, FT_STEPS steps each with the
#      same data, schedule and seed: clean (the control) and adversarial (PGD on the training
#      log-mel, experiment.adversarial), so the comparison isolates adversarial training
#   2. the interactions experiment (experiments/interactions/experiment.py): exact multi-order
#      interactions of time segments, clean vs PGD-attacked clips, control vs robust model, on
#      held-out test utterances; word-interaction trees of test texts through the TTS run
#   3. `chorus analyze interactions` on the out-of-distribution WAV of reproduce and on a text
# Every step resumes: re-running after an interruption continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/reproduce}
FT_STEPS=${FT_STEPS:-150}
UTTERANCES=${UTTERANCES:-24}
CHORUS=.venv/bin/chorus
CORPUS="$RUN_DIR/corpus"
for need in "$RUN_DIR/asr/config.json" "$RUN_DIR/tts/config.json" "$CORPUS"; do
  if [ ! -e "$need" ]; then
    echo "analysis: $need is missing; run \`make reproduce\` first (RUN_DIR=$RUN_DIR)" >&2
    exit 2
  fi
done
FT_SETS=(--set experiment.backbone_from="$RUN_DIR/asr" --set train.steps="$FT_STEPS"
         --set train.eval_every="$FT_STEPS" --set train.checkpoint_every=25
         --set train.log_every=25 --set experiment.speed_examples=0
         --set experiment.eval_examples=100 --set optim.warmup_steps=10
         --set optim.learning_rate=1e-3)

echo "== ASR fine-tune, clean (the control)"
$CHORUS train --experiment asr --preset cpu-tiny --workdir "$RUN_DIR/asr_clean_ft" \
  --data "$CORPUS" "${FT_SETS[@]}"
echo "== ASR fine-tune, adversarial (PGD on the log-mel)"
$CHORUS train --experiment asr --preset cpu-tiny --workdir "$RUN_DIR/asr_adv_ft" \
  --data "$CORPUS" "${FT_SETS[@]}" --set experiment.adversarial.epsilon=0.5 \
  --set experiment.adversarial.steps=3

echo "== interactions experiment"
$CHORUS analyze experiment --asr "$RUN_DIR/asr_clean_ft" --robust "$RUN_DIR/asr_adv_ft" \
  --data "$CORPUS" --out "$RUN_DIR/interactions" --utterances "$UTTERANCES" --players 10 \
  --epsilon 0.5 --steps 10 --tts "$RUN_DIR/tts" --codec "$RUN_DIR/codec" --texts 3

echo "== one clip, one text"
$CHORUS analyze interactions --workdir "$RUN_DIR/asr" --audio "$RUN_DIR/unseen_voice.wav" \
  --out "$RUN_DIR/analyze_audio" --players 12
$CHORUS analyze interactions --workdir "$RUN_DIR/tts" --codec "$RUN_DIR/codec" \
  --text "please turn on the kitchen light (softly) now" --out "$RUN_DIR/analyze_text"
