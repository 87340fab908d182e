#!/usr/bin/env bash
# Every GPU figure of the performance benchmarks in one call, for a GPU machine without the data set
# or the text-encoder package (see bench/README.md for how .devcache is made on a machine that has them):
#   .devcache/minilm-trimmed/   the text encoder (all-MiniLM-L6-v2 in fp16, cut to the benchmarks' texts)
#   .devcache/quality-pack.npz  python bench/sample_quality.py pack --data ../shared/data/bandai-namco ...
#   .devcache/train-pack.npz    a motion pack (mofusion data pack) of Bandai-Namco clips
#   .devcache/base/             python bench/ab_revisions.py --base REV --export-base .devcache/base
# Usage: OUT=folder bash bench/gpu.sh    (writes sample-cuda.json, ab-sampling-cuda.json,
#        profile-step-cuda*.json, quality-cuda.json, train-cuda.json)
#        PARTS="profile train" OUT=folder bash bench/gpu.sh    (only those parts; the whole script can
#        take longer than one 10-minute device command: each part's timeout is a *_S variable)
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=src TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench/results}
# the encoder cut down to the benchmarks' texts (python bench/trim_encoder.py: 21 MiB), else the whole fp16 copy
ENCODER=.devcache/minilm-trimmed
[ -d "$ENCODER" ] || ENCODER=.devcache/minilm-fp16
PY=${PYTHON:-python3}
PARTS=${PARTS:-"tests sample ab profile quality train"}
wants() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
if wants tests; then
    MOFUSION_TEST_TEXT_ENCODER="$ENCODER" $PY -m pytest -q -o addopts="" -m gpu tests/test_fast.py tests/test_kernels.py \
        tests/test_text.py tests/test_bench_roofline.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.log" | tail -4
fi
if wants sample; then
    timeout "${SAMPLE_S:-280}" $PY bench/sample.py --device cuda --text-encoder "$ENCODER" --compile \
        --budget-s "${SAMPLE_BUDGET_S:-220}" --out "$OUT/sample-cuda.json" 2>&1 | grep -v '^{'
fi
if wants profile; then  # the default step (all in bf16, fused group norms) at both ends of the batch
    # range, and with channels-last convolutions (Acceleration.channels_last); the MDM-sized
    # reference at batch 1
    for batch in 1024 1; do
        for last in "" "--channels-last"; do
            mdm="--no-mdm"; [ "$batch" = 1 ] && [ -z "$last" ] && mdm=""
            timeout "${PROFILE_S:-90}" $PY bench/profile_step.py --device cuda --batch $batch --bf16-all --fused $last \
                $mdm --out "$OUT/profile-step-cuda-batch$batch-bf16-all-fused${last:+-channels-last}.json" 2>&1 \
                | grep -v -e '^{' -e '^USDT'
        done
    done
fi
if wants ab; then  # the sampling code of .devcache/base's revision against this tree, in one process
    timeout "${AB_S:-150}" $PY bench/ab_revisions.py --base-tree .devcache/base --device cuda \
        --text-encoder "$ENCODER" --batch 1024 --out "$OUT/ab-sampling-cuda.json" 2>&1 | tail -7
fi
if wants quality; then
    timeout "${QUALITY_S:-200}" $PY bench/sample_quality.py run --pack .devcache/quality-pack.npz --device cuda \
        --text-encoder "$ENCODER" --batch 512 --replications 10 --out "$OUT/quality-cuda.json" \
        --row ddpm:50:none --row ddpm:50:bf16+graph --row ddpm:20:bf16+graph --row ddim:20:bf16+graph \
        --row ddpm:10:bf16+graph --row dpm-sde:10:bf16+graph --row ddpm:20:bf16-all+graph \
        --row ddpm:20:bf16-all+fused+graph --row ddpm:50:bf16-all+fused+graph \
        --row ddpm:20:bf16-all+fused+channels-last+graph 2>&1 | tail -10
fi
if wants train; then
    timeout "${TRAIN_S:-100}" $PY bench/train.py --data .devcache/train-pack.npz --device cuda --steps 40 \
        --set condition.text_encoder="$ENCODER" --cache /tmp/mofusion-cache --out "$OUT/train-cuda.json" 2>&1 | tail -7
fi
