#!/usr/bin/env bash
# The paper-scale configs (ResNet-50 on CIFAR-100 and on Imagenette, direct training at T_train = 10
# against conversion) end to end on one CUDA GPU, at a budget that fits about 10 minutes on one
# H200: 5,000 training and 1,000 test images, 3 epochs, T up to 256. It prints each run's summary
# table and leaves the leaderboards under $OUT.
#
#   DATA_ROOT=/data scripts/gpu_check.sh            # cifar-100-python/ and imagenette2-160/ under /data
#   scripts/gpu_check.sh --dry-run                  # print the commands only
#
# A dataset that is not under DATA_ROOT is skipped with a line that says so.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT="${DATA_ROOT:-../shared/data}"
OUT="${OUT:-runs/gpu-check}"
PYTHON="${PYTHON:-python}"
budget=(--device cuda --epochs 3 --set data.train_subset=5000 --set data.test_subset=1000
        --set "eval.time_steps=[1,2,4,8,10,16,32,64,128,256]" --results-dir "$OUT" --quiet)
declare -A needs=([cifar100_resnet50]=cifar-100-python [imagenette_resnet50]=imagenette2-160)
for config in cifar100_resnet50 imagenette_resnet50; do
    command=("$PYTHON" run_all.py --config "configs/$config.yaml" --data-root "$DATA_ROOT" "${budget[@]}")
    if [[ "${1:-}" == "--dry-run" ]]; then
        printf '%q ' "${command[@]}"; echo
        continue
    fi
    if [[ ! -d "$DATA_ROOT/${needs[$config]}" ]]; then
        echo "skipped $config: $DATA_ROOT/${needs[$config]} not found (set DATA_ROOT)"
        continue
    fi
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here')"
    echo "== $config on $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name())')"
    start=$(date +%s)
    "${command[@]}"
    echo "== $config took $(( $(date +%s) - start )) s"
done
