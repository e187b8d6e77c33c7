#!/usr/bin/env bash
# The realtime job on the runs of `make reproduce` (`make realtime`):
#   1. SFT of the realtime policy on the corpus' dialogue turns (the user's question as audio,
#      the card and the answer as text, then the answer spoken: the reproduce codec's codes of
#      every persona answer, spoken by eSpeak NG and cached beside the corpus on first use) and
#      out-of-scope requests (other utterances, declined in character), from the reproduce ASR
#      run's backbone, every card a fresh one of the training names and places; its persona
#      table (corpus cards, held-out cards, out of scope) and spoken table (held-out turns
#      streamed through the session: the answers' audio judged by the chorus ASR and the
#      codec's CTC head, speaker similarity to the card's voice, first-audio latency)
#   2. `chorus chat` with that run: two questions as WAVs, a held-out card -> spoken answers
#   3. the generative judge (text only) and its accuracy tables
#   4. the Bradley-Terry reward model (the judge's labels, a scalar head) and its tables
#   5. the reward ablation (`chorus ablate`, experiments/realtime/ablation.yaml): GRPO from the
#      SFT run against the judge vs the exact persona checker (the rule oracle) vs the
#      Bradley-Terry model, x 3 seeds, every arm logging all three: table + plots
# Not in `make reproduce`: that job is at its 60-minute budget without these stages.
# Every step resumes: re-running after an interruption continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/reproduce}
RT_STEPS=${RT_STEPS:-1500}
RT_SEQ_LEN=${RT_SEQ_LEN:-384}
RT_CLIPS=${RT_CLIPS:-2}
JUDGE_STEPS=${JUDGE_STEPS:-600}
RM_STEPS=${RM_STEPS:-600}
CHORUS=.venv/bin/chorus
PY=.venv/bin/python
CORPUS="$RUN_DIR/corpus"
for need in "$RUN_DIR/asr/config.json" "$RUN_DIR/codec/voices.json" "$CORPUS"; do
  if [ ! -e "$need" ]; then
    echo "realtime: $need is missing; run \`make reproduce\` first (RUN_DIR=$RUN_DIR)" >&2
    exit 2
  fi
done

echo "== realtime SFT (dialogue turns, text then speech, from the ASR backbone)"
# A spoken turn is ~150 tokens (card, question frames, answer, its 25 Hz codes): rows of 384
# tokens with two audio slots hold two turns, and every slot costs an encoder pass.
$CHORUS train --experiment realtime --preset cpu-tiny --workdir "$RUN_DIR/realtime" \
  --data "$CORPUS" --set experiment.backbone_from="$RUN_DIR/asr" --set audio.chunk_size=4 \
  --set experiment.codec_run="$RUN_DIR/codec" --set experiment.asr_run="$RUN_DIR/asr" \
  --set train.seq_len="$RT_SEQ_LEN" --set train.max_audio_clips="$RT_CLIPS" \
  --set train.steps="$RT_STEPS" --set train.eval_every="$RT_STEPS" \
  --set train.checkpoint_every=100 --set train.log_every=50 --quiet
$CHORUS eval --workdir "$RUN_DIR/realtime" > /dev/null
cat "$RUN_DIR/realtime/eval/realtime_eval.md"

echo "== chorus chat (the SFT run answers two spoken questions as a held-out persona)"
CHAT="$RUN_DIR/chat"
$PY - "$CHAT" "$RUN_DIR/codec/voices.json" <<'PY'
import json
import os
import sys

from chorus.atomic import write_json
from chorus.audio.io import write_wav
from data_pipelines.personas import split_lexicon
from data_pipelines.synthesis import synthesize

out, voices = sys.argv[1], sorted(json.load(open(sys.argv[2])))
os.makedirs(out, exist_ok=True)
held_out = split_lexicon()[1]  # names and places no training card had
write_json(os.path.join(out, "card.json"), {
    "name": held_out.names[1], "age": 41, "home": held_out.places[1], "job": "baker",
    "likes": ["chess", "jazz"], "style": "formal", "voice": voices[0]})
for k, (text, voice) in enumerate([("Hello there. What do you do for a living?", "en-gb+f3"),
                                   ("Tell me, where do you live?", "en-us+m3")]):
    write_wav(os.path.join(out, f"q{k}.wav"), synthesize(text, voice=voice)[0])
PY
$CHORUS chat --workdir "$RUN_DIR/realtime" --persona "$CHAT/card.json" --out "$CHAT/answers" \
  "$CHAT/q0.wav" "$CHAT/q1.wav"

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
