#!/usr/bin/env bash
# The realtime job on the runs of `make reproduce` (`make realtime`), the text side of the mode:
#   1. SFT of the realtime policy on the corpus' dialogue turns (the user's question as audio,
#      the card and the answer as text) and out-of-scope requests (other utterances, declined
#      in character), from the reproduce ASR run's backbone, every card a fresh one of the
#      training names and places; its persona table (corpus cards, held-out cards, out of scope)
#   2. the generative judge (text only) and its accuracy tables
#   3. the Bradley-Terry reward model (the judge's labels, a scalar head) and its tables
#   4. the reward ablation (`chorus ablate`, experiments/realtime/ablation.yaml): GRPO from the
#      SFT run against the judge vs the exact persona checker (the rule oracle) vs the
#      Bradley-Terry model, x 3 seeds, every arm logging all three: table + plots
# Not in `make reproduce`: that job is at its 60-minute budget without these stages.
# Every step resumes: re-running after an interruption continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/reproduce}
RT_STEPS=${RT_STEPS:-1500}
JUDGE_STEPS=${JUDGE_STEPS:-600}
RM_STEPS=${RM_STEPS:-600}
CHORUS=.venv/bin/chorus
CORPUS="$RUN_DIR/corpus"
for need in "$RUN_DIR/asr/config.json" "$CORPUS"; do
  if [ ! -e "$need" ]; then
    echo "realtime: $need is missing; run \`make reproduce\` first (RUN_DIR=$RUN_DIR)" >&2
    exit 2
  fi
done

echo "== realtime SFT (dialogue turns, from the ASR backbone)"
# Three audio slots per packed row: a row of 256 tokens holds at most three turns (the same
# batches as with the preset's four; a step 0.71 -> 0.62 s), and every slot costs an encoder pass.
$CHORUS train --experiment realtime --preset cpu-tiny --workdir "$RUN_DIR/realtime" \
  --data "$CORPUS" --set experiment.backbone_from="$RUN_DIR/asr" --set audio.chunk_size=4 \
  --set train.max_audio_clips=3 --set train.steps="$RT_STEPS" --set train.eval_every="$RT_STEPS" \
  --set train.checkpoint_every=100 --set train.log_every=50 --quiet
$CHORUS eval --workdir "$RUN_DIR/realtime" > /dev/null
cat "$RUN_DIR/realtime/eval/realtime_eval.md"

echo "== judge"
$CHORUS train --experiment judge --preset cpu-tiny --workdir "$RUN_DIR/judge" --data "$CORPUS" \
  --set train.steps="$JUDGE_STEPS" --set train.eval_every="$JUDGE_STEPS" \
  --set train.checkpoint_every=100 --set train.log_every=50 --quiet
$CHORUS eval --workdir "$RUN_DIR/judge" > /dev/null
cat "$RUN_DIR/judge/eval/judge_eval.md"

echo "== Bradley-Terry reward model"
$CHORUS train --experiment reward_model --preset cpu-tiny --workdir "$RUN_DIR/reward_model" \
  --data "$CORPUS" --set train.seq_len=192 --set train.steps="$RM_STEPS" \
  --set train.eval_every="$RM_STEPS" --set train.checkpoint_every=100 --set train.log_every=50 \
  --quiet
$CHORUS eval --workdir "$RUN_DIR/reward_model" > /dev/null
cat "$RUN_DIR/reward_model/eval/reward_model_eval.md"

echo "== realtime reward ablation (GRPO vs judge / checker / Bradley-Terry, 3 seeds)"
# The sweep names make reproduce's default runs; this RUN_DIR's copy names its own.
SWEEP="$RUN_DIR/realtime_ablation.yaml"
sed "s|runs/reproduce/|$RUN_DIR/|g" experiments/realtime/ablation.yaml > "$SWEEP.tmp"
mv "$SWEEP.tmp" "$SWEEP"
$CHORUS ablate --experiment realtime --sweep "$SWEEP" --workdir "$RUN_DIR/realtime_ablation" \
  --set experiment.init_from="$RUN_DIR/realtime"
cat "$RUN_DIR/realtime_ablation/summary.md"
