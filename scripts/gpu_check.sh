#!/usr/bin/env bash
# The device check on a bare GPU machine (no network; torch, torchvision, timm, pandas, tabulate,
# rich, matplotlib and PyYAML preinstalled): installs this checkout without dependencies, then runs
# `python -m bench.studies.device_check` in stages under a time budget (about 8 minutes), writing
# OUT/device_check.json and OUT/device_check.md after every stage. Exits non-zero when a stage fails.
#
#   python scripts/make_device_data.py     # here, once: device-data/ (git-ignored, about 6 MB)
#   OUT=/tmp/out scripts/gpu_check.sh      # there, with device-data/ carried along
#   scripts/gpu_check.sh --device cpu --smoke   # any extra arguments go to the check (CI runs this)
#   scripts/gpu_check.sh --dry-run         # print the commands only
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/device-check}"
PYTHON="${PYTHON:-python}"
install=("$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e .)
check=("$PYTHON" -m bench.studies.device_check --data-root device-data --out "$OUT" --budget-s "${BUDGET_S:-480}")
if [[ "${1:-}" == "--dry-run" ]]; then
    printf '%q ' "${install[@]}"; echo
    printf '%q ' "${check[@]}"; echo
    exit 0
fi
"$PYTHON" -c "import bench" 2>/dev/null || "${install[@]}"
"${check[@]}" "$@"
