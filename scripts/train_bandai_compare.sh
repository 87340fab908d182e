#!/usr/bin/env bash
# The foundation issue's comparison: the `bandai` preset trained twice on one GPU, at the same time,
# with and without the kinematic losses; then 20 six-second samples of each and the kinematics table.
#
# Usage: scripts/train_bandai_compare.sh DATA OUTDIR [MAX_STEPS] [MAX_MINUTES]
#   DATA: the Bandai-Namco folder, or a pack from `mofusion data pack` (to carry to a GPU machine)
set -euo pipefail
DATA=$1
OUT=$2
STEPS=${3:-2600}
MINUTES=${4:-7.5}
MOFUSION=${MOFUSION:-"python3 -m mofusion.cli"}
mkdir -p "$OUT"
$MOFUSION data prepare --data "$DATA" --subset dataset-2
for variant in kinematic plain; do
  extra=""
  if [ "$variant" = plain ]; then extra="--no-kinematic"; fi
  $MOFUSION train --preset bandai --data "$DATA" --out "$OUT/$variant" --max-steps "$STEPS" --set train.lr_decay_steps="$STEPS" \
    --set train.max_minutes="$MINUTES" -q $extra >"$OUT/$variant.log" 2>&1 &
done
wait
cat "$OUT"/kinematic.log "$OUT"/plain.log
$MOFUSION evaluate kinematics -c "$OUT/kinematic" -c "$OUT/plain" -n 20 --seconds 6 --seed 0 -o "$OUT/kinematics.json"
