#!/usr/bin/env bash
# Ten prompts in wording the text model never saw in training: the evaluator's nearest label for
# four generations of each (prompts.json), and a video of each prompt's four motions to look at.
#
# Usage: scripts/text_prompts.sh DATA OUTDIR [CHECKPOINT]   (default checkpoint: the packaged model)
set -euo pipefail
DATA=$1
OUT=$2
MOFUSION=${MOFUSION:-"python3 -m mofusion.cli"}
CKPT=()
if [ $# -ge 3 ]; then CKPT=(-c "$3"); fi
PROMPTS=(
  "someone strolls along cheerfully"
  "an old man kicks"
  "somebody backs away nervously"
  "a person hits with a fist furiously"
  "a young person lifts both arms"
  "an old woman waves the right arm"
  "somebody swings a blade like a hoodlum"
  "a figure performs a short dance theatrically"
  "someone trots along vigorously"
  "here a man sidesteps to the left"
)
mkdir -p "$OUT"
args=()
for p in "${PROMPTS[@]}"; do args+=(--text "$p"); done
$MOFUSION evaluate prompts "${CKPT[@]}" --data "$DATA" -n 4 "${args[@]}" -o "$OUT/prompts.json"
i=0
for p in "${PROMPTS[@]}"; do
  $MOFUSION generate "${CKPT[@]}" --text "$p" --seconds 6 --num-samples 4 --seed "$i" -q \
    --out "$OUT/prompt-$i.npy" --render "$OUT/prompt-$i.mp4" >/dev/null
  i=$((i + 1))
done
