#!/usr/bin/env bash
# Text-only ablation on MVSA dev (docs/results.md): MLF, +LBCL, +DBCL, full, in the published forms
# (reference / paper LBCL, raw dot products at tau 0.07, weights 1) and the normalized form (cosine at tau 0.1,
# per-anchor, class-balanced LBCL, weights 0.1).
# Usage: [PRESET=mvsa-multiple] [ONLY="mlf full-reference"] [HOLDOUT=0.1] [RUNS=runs/x] \
#          scripts/run_ablation.sh DATA_ROOT [EPOCHS] [SEEDS...]
# HOLDOUT > 0 selects each run's best epoch on that share of train (held out) and reports dev alongside.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?data root}; EPOCHS=${2:-3}; shift 2 || true; SEEDS=${*:-0}
PRESET=${PRESET:-mvsa-single}
ONLY=${ONLY:-mlf lbcl-reference lbcl-paper dbcl full-reference full-paper lbcl-normalized dbcl-normalized full-normalized}
DEFAULT_RUNS=runs/ablation; [ "$PRESET" = mvsa-single ] || DEFAULT_RUNS=runs/ablation-$PRESET
RUNS=${RUNS:-$DEFAULT_RUNS}
HOLDOUT=${HOLDOUT:-0}
COMMON=(--preset "$PRESET" --data-root "$DATA" --no-images --fusion-dim 256 --max-text-len 128
        --epochs "$EPOCHS" --stage1-epochs "$EPOCHS" --lr 1e-4 --threads 1 --no-progress
        --text-cache-file "runs/cache/$PRESET-minilm.safetensors" --holdout-fraction "$HOLDOUT")
NORMALIZED="--temperature 0.1 --lbcl-weight 0.1 --dbcl-weight 0.1"
declare -A VARIANTS=(
  [mlf]="--no-lbcl --no-dbcl"
  [lbcl-reference]="--no-dbcl"
  [lbcl-paper]="--no-dbcl --lbcl-form paper"
  [dbcl]="--no-lbcl"
  [full-reference]=""
  [full-paper]="--lbcl-form paper"
  [lbcl-normalized]="--no-dbcl --lbcl-form normalized $NORMALIZED"
  [dbcl-normalized]="--no-lbcl --dbcl-form normalized $NORMALIZED"
  [full-normalized]="--lbcl-form normalized --dbcl-form normalized $NORMALIZED"
)
mkdir -p "$RUNS" runs/logs
for seed in $SEEDS; do
  for name in $ONLY; do
    out=$RUNS/$name-s$seed
    [ -f "$out/metrics.jsonl" ] && [ "$(wc -l < "$out/metrics.jsonl")" -ge "$EPOCHS" ] && continue
    resume=(); [ -f "$out/resume/state.json" ] && resume=(--resume)
    # shellcheck disable=SC2086
    .venv/bin/clmlf train "${COMMON[@]}" --seed "$seed" --out "$out" ${VARIANTS[$name]} "${resume[@]}" \
      >> "runs/logs/$(basename "$RUNS")-$name-s$seed.log" 2>&1
  done
done
