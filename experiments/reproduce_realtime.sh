#!/usr/bin/env bash
# The realtime job on the runs of `make reproduce` (`make realtime`), the text side of the mode:
#   1. SFT of the realtime policy on the corpus' dialogue turns (the user's question as audio,
#      the card and the answer as text), from the reproduce ASR run's backbone, every card a
#      fresh one of the training names and places; its persona table (corpus and held-out cards)
#   2. the generative judge (text only) and its accuracy tables
#   3. GRPO from the SFT run against the judge (+ the interaction rules), with the exact persona
#      checker logged at weight 0; and the same against the checker itself (the rule oracle),
#      with the judge logged at weight 0: judge vs checker over RL, both directions
# Not in `make reproduce`: that job is at its 60-minute budget without these stages.
# Every step resumes: re-running after an interruption continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/reproduce}
RT_STEPS=${RT_STEPS:-1500}
JUDGE_STEPS=${JUDGE_STEPS:-600}
RL_STEPS=${RL_STEPS:-40}
CHORUS=.venv/bin/chorus
CORPUS="$RUN_DIR/corpus"
for need in "$RUN_DIR/asr/config.json" "$CORPUS"; do
  if [ ! -e "$need" ]; then
    echo "realtime: $need is missing; run \`make reproduce\` first (RUN_DIR=$RUN_DIR)" >&2
    exit 2
  fi
done

echo "== realtime SFT (dialogue turns, from the ASR backbone)"
$CHORUS train --experiment realtime --preset cpu-tiny --workdir "$RUN_DIR/realtime" \
  --data "$CORPUS" --set experiment.backbone_from="$RUN_DIR/asr" --set audio.chunk_size=4 \
  --set train.steps="$RT_STEPS" --set train.eval_every="$RT_STEPS" \
  --set train.checkpoint_every=100 --set train.log_every=50 --quiet
$CHORUS eval --workdir "$RUN_DIR/realtime" > /dev/null
cat "$RUN_DIR/realtime/eval/realtime_eval.md"

echo "== judge"
$CHORUS train --experiment judge --preset cpu-tiny --workdir "$RUN_DIR/judge" --data "$CORPUS" \
  --set train.steps="$JUDGE_STEPS" --set train.eval_every="$JUDGE_STEPS" \
  --set train.checkpoint_every=100 --set train.log_every=50 --quiet
$CHORUS eval --workdir "$RUN_DIR/judge" > /dev/null
cat "$RUN_DIR/judge/eval/judge_eval.md"

# 4 prompts x 8 samples per step, advantages within each prompt's group; a learning rate well
# below the preset's 3e-3 (at 3e-3 the policy collapsed: README).
RL_SETS=(--set experiment.group_size=8 --set train.batch_size=32 --set experiment.eval_prompts=64
         --set optim.learning_rate=2e-4 --set optim.warmup_steps=5
         --set experiment.reward_normalization=group --set train.steps="$RL_STEPS"
         --set train.checkpoint_every=5 --set train.log_every=1 --quiet)
JUDGE="judge: {weight: JW, run: $RUN_DIR/judge}"
for reward in judge checker; do
  if [ "$reward" = judge ]; then
    MIX="{${JUDGE/JW/1}, persona_rules: 0.5, persona_consistent: 0, persona_fact: 0}"
  else
    MIX="{${JUDGE/JW/0}, persona_rules: 0.5, persona_consistent: 1, persona_fact: 0}"
  fi
  echo "== realtime GRPO against the $reward"
  $CHORUS rl --experiment realtime --algo grpo --init-from "$RUN_DIR/realtime" \
    --workdir "$RUN_DIR/realtime_grpo_$reward" --preset cpu-tiny --set audio.chunk_size=4 \
    --set "experiment.rewards=$MIX" "${RL_SETS[@]}"
  cat "$RUN_DIR/realtime_grpo_$reward/eval/realtime_eval.md"
done
