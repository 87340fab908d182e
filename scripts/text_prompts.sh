#!/usr/bin/env bash
# Ten prompts in wording the text model never saw in training: the evaluator's nearest label for
# four generations of each (prompts.json), a video of each prompt's four motions to look at, and
# a sheet of frames (sheet.png).
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
# sheet.png: one row per prompt, its first motion (the video's left quarter) at 1, 2, 3, 4 and 5 s,
# made with the ffmpeg that imageio-ffmpeg ships.
FFMPEG=$(python3 -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())")
inputs=()
for ((k = 0; k < i; k++)); do
  "$FFMPEG" -loglevel error -y -i "$OUT/prompt-$k.mp4" \
    -vf "crop=iw/4:ih:0:0,scale=160:-2,fps=1,select='between(n\,1\,5)',tile=5x1" \
    -frames:v 1 "$OUT/row-$k.png"
  inputs+=(-i "$OUT/row-$k.png")
done
"$FFMPEG" -loglevel error -y "${inputs[@]}" -filter_complex "vstack=inputs=$i" "$OUT/sheet.png"
rm -f "$OUT"/row-*.png
echo "wrote $OUT/prompts.json, $OUT/prompt-*.mp4 and $OUT/sheet.png"
