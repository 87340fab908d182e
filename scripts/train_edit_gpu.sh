#!/usr/bin/env bash
# The packaged editing model's last training round, on one GPU in a fixed time: a short probe
# measures the step rate at the batch size, then a run whose cosine decay ends where the time does,
# started from the previous package; its EMA weights exported (float16) with the package's sampling
# settings. The GPU machine needs no data set: carry a pack of Bandai-Namco dataset-2 (30.6 MiB):
#   mofusion data pack --data ../shared/data/bandai-namco --subset dataset-2 --out .devcache/edit-pack.npz
# It gives the same training/validation/test split as the folder (the split is made from the names).
#
# Usage: [TRAIN_S=400] [BATCH=256] [LR=0.0002] [INIT=checkpoint] scripts/train_edit_gpu.sh PACK OUTDIR
#   writes OUTDIR/run (metrics.jsonl, config.json) and OUTDIR/model (the exported model)
set -uo pipefail
PACK=$1
OUT=$2
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-src}
MOFUSION=${MOFUSION:-"python3 -m mofusion.cli"}
PY=${PYTHON:-python3}
TRAIN_S=${TRAIN_S:-400}; BATCH=${BATCH:-256}; LR=${LR:-0.0002}
INIT=${INIT:-src/mofusion/pretrained/bandai-edit}
WORK=$(mktemp -d)
mkdir -p "$OUT/run"
COMMON=(--preset bandai-small --data "$PACK" --init-from "$INIT" -q
  --set "denoiser.channels=[96,192,384]" --set denoiser.mask_conditioning=true
  --set denoiser.interpolation_residual=true --set diffusion.prediction=sample
  --set train.batch_size="$BATCH" --set train.lr="$LR" --set "train.mask_weights=[1,1,1,1,1,3]"
  --set train.mask_unconditional=0.1 --set train.warmup_steps=100
  --set "loss.block_weights={'root_yaw_velocity': 8, 'root_xz_velocity': 8, 'root_height': 64}")
started=$(date +%s)
$MOFUSION train "${COMMON[@]}" --out "$WORK/probe" --set train.max_steps="${PROBE_STEPS:-120}" \
  --set train.log_every=20 --set train.val_every=100000 --set train.checkpoint_every=100000 || exit 1
RATE=$($PY -c "
import json, statistics
rows = [json.loads(line) for line in open('$WORK/probe/metrics.jsonl') if 'steps_per_s' in line]
print(statistics.median(r['steps_per_s'] for r in rows[1:] or rows))")  # the first window warms up
STEPS=$($PY -c "print(max(100, int($RATE * $TRAIN_S * 0.97)))")
echo "probe: $(( $(date +%s) - started )) s, $RATE steps/s at batch $BATCH: $STEPS steps in $TRAIN_S s"
started=$(date +%s)
$MOFUSION train "${COMMON[@]}" --out "$WORK/run" --set train.max_steps="$STEPS" \
  --set train.lr_decay_steps="$STEPS" --set train.log_every=100 --set train.val_every=1000 \
  --set train.val_batches=8 --set train.checkpoint_every=100000 \
  --set train.max_minutes="$($PY -c "print(round($TRAIN_S * 1.15 / 60, 2))")" || exit 1
echo "trained: $(( $(date +%s) - started )) s"
cp "$WORK/run/metrics.jsonl" "$WORK/run/config.json" "$OUT/run/"
$MOFUSION export -c "$WORK/run" --out "$OUT/model" --half --set data.path=../shared/data/bandai-namco \
  --set sample.steps=5 --set sample.last_step=400 --set sample.smoothing_weight=2 \
  --set sample.temperature=0.15 --set sample.velocity_weight=2 || exit 1
rm -rf "$WORK"
