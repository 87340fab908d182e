#!/usr/bin/env bash
# Two models trained side by side on one machine, then measured against each other.
#
#   kinematic: the foundation issue's comparison, the `bandai` preset with and without the kinematic
#              losses on one GPU; then 20 six-second samples of each and the kinematics table.
#   editing:   the editing issue's comparison, two `bandai-small` models of equal budget on a CPU
#              (one thread each): one plain (known frames pasted in at every step, the seed's way)
#              and one trained with random masks whose known frames enter as extra input channels;
#              then the LAFAN1-style in-betweening benchmark on the test split, both ways of sampling.
#   text:      the text issue's comparison, two `bandai-text-small` models (both Bandai-Namco sets,
#              captions from the labels) on a CPU, with and without the kinematic losses; then the
#              guidance sweep on the validation split and the evaluation table on the test split.
#
# Usage: scripts/train_compare.sh kinematic|editing|text DATA OUTDIR [MAX_STEPS] [MAX_MINUTES] [GUIDANCE]
#   GUIDANCE (text): the guidance scale both models are exported with for the table (chosen from the
#   sweep on the validation split that the script prints first)
#   DATA: the Bandai-Namco folder, or a pack from `mofusion data pack` (to carry to a GPU machine)
set -euo pipefail
WHAT=$1
DATA=$2
OUT=$3
MOFUSION=${MOFUSION:-"python3 -m mofusion.cli"}
if [ "$WHAT" != kinematic ] && [ "$WHAT" != editing ] && [ "$WHAT" != text ]; then
  echo "usage: $0 kinematic|editing|text DATA OUTDIR [MAX_STEPS] [MAX_MINUTES]" >&2
  exit 2
fi
mkdir -p "$OUT"
if [ "$WHAT" = text ]; then
  $MOFUSION data prepare --data "$DATA" >/dev/null
else
  $MOFUSION data prepare --data "$DATA" --subset dataset-2 >/dev/null
fi
case "$WHAT" in
kinematic)
  STEPS=${4:-2600}
  MINUTES=${5:-7.5}
  common=(--preset bandai --data "$DATA" --max-steps "$STEPS" --set train.lr_decay_steps="$STEPS"
    --set train.max_minutes="$MINUTES" -q)
  $MOFUSION train "${common[@]}" --out "$OUT/kinematic" >"$OUT/kinematic.log" 2>&1 &
  $MOFUSION train "${common[@]}" --no-kinematic --out "$OUT/plain" >"$OUT/plain.log" 2>&1 &
  wait
  cat "$OUT/kinematic.log" "$OUT/plain.log"
  $MOFUSION evaluate kinematics -c "$OUT/kinematic" -c "$OUT/plain" -n 20 --seconds 6 --seed 0 \
    -o "$OUT/kinematics.json"
  ;;
editing)
  STEPS=${4:-2500}
  MINUTES=${5:-44}
  common=(--preset bandai-small --data "$DATA" --max-steps "$STEPS" --set train.batch_size=64
    --set train.lr_decay_steps="$STEPS" --set train.max_minutes="$MINUTES" --set train.val_every=500
    --set train.checkpoint_every=500 -q)
  OMP_NUM_THREADS=1 $MOFUSION train "${common[@]}" --out "$OUT/plain" >"$OUT/plain.log" 2>&1 &
  OMP_NUM_THREADS=1 $MOFUSION train "${common[@]}" --set denoiser.mask_conditioning=true \
    --out "$OUT/masked" >"$OUT/masked.log" 2>&1 &
  wait
  cat "$OUT/plain.log" "$OUT/masked.log"
  $MOFUSION evaluate inbetween --data "$DATA" --sampler ddpm --steps 50 \
    -c "$OUT/plain" --label "plain, replacement" --method replace \
    -c "$OUT/masked" --label "masked, replacement" --method replace \
    -c "$OUT/masked" --label "masked, input channels" --method condition \
    -c "$OUT/masked" --label "masked, both" --method both \
    -o "$OUT/inbetween.json"
  ;;
text)
  STEPS=${4:-4000}
  MINUTES=${5:-62}
  common=(--preset bandai-text-small --data "$DATA" --max-steps "$STEPS" --set train.lr_decay_steps="$STEPS"
    --set train.max_minutes="$MINUTES" -q)
  OMP_NUM_THREADS=1 $MOFUSION train "${common[@]}" --out "$OUT/kinematic" >"$OUT/kinematic.log" 2>&1 &
  OMP_NUM_THREADS=1 $MOFUSION train "${common[@]}" --no-kinematic --out "$OUT/plain" >"$OUT/plain.log" 2>&1 &
  wait
  cat "$OUT/kinematic.log" "$OUT/plain.log"
  $MOFUSION evaluate text -c "$OUT/kinematic" --label ours --split val --replications 3 --no-multimodality \
    --guidance 1 --guidance 1.5 --guidance 2.5 --guidance 4 --guidance 6 -o "$OUT/guidance-sweep-val.json"
  GUIDANCE=${6:-2.5}
  for run in kinematic plain; do
    $MOFUSION export -c "$OUT/$run" --out "$OUT/$run-fp16" --half --set sample.guidance_scale="$GUIDANCE"
  done
  $MOFUSION evaluate text -c "$OUT/kinematic-fp16" --label ours -c "$OUT/plain-fp16" \
    --label "ours, no kinematic losses" --ddim 50 --ddim 20 --ddim 10 --replications 10 \
    -o "$OUT/text-eval-test.json"
  ;;
esac
