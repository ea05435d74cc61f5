#!/usr/bin/env bash
# Dev accuracy of a checkpoint with and without label-free photos attached (docs/model-card.md).
# Usage: scripts/measure_photo_robustness.sh DATA_ROOT [CHECKPOINT] [DATASET]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?data root}; CKPT=${2:-}; DATASET=${3:-mvsa-single}
ARGS=(--data-root "$DATA" --dataset "$DATASET" --split dev --json --no-progress --threads 1)
[ -n "$CKPT" ] && ARGS+=(--checkpoint "$CKPT")
echo "plain $(.venv/bin/clmlf evaluate "${ARGS[@]}" | tail -1)"
for seed in 0 1 2; do
  echo "photos-seed$seed $(.venv/bin/clmlf evaluate "${ARGS[@]}" --attach-photos --photo-seed "$seed" | tail -1)"
done
