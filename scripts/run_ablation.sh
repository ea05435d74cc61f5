#!/usr/bin/env bash
# Text-only ablation on MVSA dev (docs/results.md): MLF, +LBCL (both forms), +DBCL, full (both forms).
# Usage: [PRESET=mvsa-multiple] [ONLY="mlf full-reference"] scripts/run_ablation.sh DATA_ROOT [EPOCHS] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?data root}; EPOCHS=${2:-3}; shift 2 || true; SEEDS=${*:-0}
PRESET=${PRESET:-mvsa-single}
ONLY=${ONLY:-mlf lbcl-reference lbcl-paper dbcl full-reference full-paper}
RUNS=runs/ablation; [ "$PRESET" = mvsa-single ] || RUNS=runs/ablation-$PRESET
COMMON=(--preset "$PRESET" --data-root "$DATA" --no-images --fusion-dim 256 --max-text-len 128
        --epochs "$EPOCHS" --stage1-epochs "$EPOCHS" --lr 1e-4 --threads 1 --no-progress
        --text-cache-file "runs/cache/$PRESET-minilm.safetensors")
declare -A VARIANTS=(
  [mlf]="--no-lbcl --no-dbcl"
  [lbcl-reference]="--no-dbcl"
  [lbcl-paper]="--no-dbcl --lbcl-form paper"
  [dbcl]="--no-lbcl"
  [full-reference]=""
  [full-paper]="--lbcl-form paper"
)
mkdir -p "$RUNS" runs/logs
for seed in $SEEDS; do
  for name in $ONLY; do
    out=$RUNS/$name-s$seed
    [ -f "$out/metrics.jsonl" ] && [ "$(wc -l < "$out/metrics.jsonl")" -ge "$EPOCHS" ] && continue
    resume=(); [ -f "$out/resume/state.json" ] && resume=(--resume)
    # shellcheck disable=SC2086
    .venv/bin/clmlf train "${COMMON[@]}" --seed "$seed" --out "$out" ${VARIANTS[$name]} "${resume[@]}" \
      >> "runs/logs/ablation-$PRESET-$name-s$seed.log" 2>&1
  done
done
