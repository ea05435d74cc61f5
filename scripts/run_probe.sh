#!/usr/bin/env bash
# The image-probe measurements of docs/results.md ("Image probe"), one step at a time.
# Usage: [PY=.venv/bin/python] scripts/run_probe.sh STEP...
#   data        build runs/probe (3,000 posts, seed 0) and runs/probe-small (600 posts, seed 0)
#   main        CLMLF with images on runs/probe (MLF, image features cached), then the held-out glyphs (test)
#   text        the same recipe with the images ignored (--no-images)
#   ablation    MLF, +LBCL, +DBCL, full on runs/probe-small, seeds 0 1 2 (SEEDS=..., EPOCHS=..., ONLY="mlf lbcl");
#               ONLY=augment adds MLF with RandAugment (what the DBCL rows change besides the loss)
#   analyse     face-attention share and text-vs-face disagreement of runs/probe-runs/main (and the embedded model)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CLMLF=("$PY" -m clmlf.cli)
export OMP_NUM_THREADS=1
RUNS=runs/probe-runs
SEEDS=${SEEDS:-0 1 2}
EPOCHS=${EPOCHS:-3}
CACHE=(--text-cache-file runs/cache/probe-minilm.safetensors)
SMALL_CACHE=(--text-cache-file runs/cache/probe-small-minilm.safetensors)
mkdir -p "$RUNS" runs/cache runs/logs

train() {  # train OUT FLAGS...: skip a finished run
  local out=$1; shift
  [ -d "$out/best" ] && [ -f "$out/metrics.jsonl" ] && ! [ -f "$out/.running" ] && return 0
  mkdir -p "$out"; touch "$out/.running"
  "${CLMLF[@]}" train --preset probe --out "$out" --threads 1 --no-progress "$@" > "runs/logs/$(basename "$out").log" 2>&1
  rm -f "$out/.running"
}

for step in "$@"; do
  case $step in
    data)
      "${CLMLF[@]}" probe build --out runs/probe --seed 0
      "${CLMLF[@]}" probe build --out runs/probe-small --size 600 --seed 0 ;;
    main)
      train "$RUNS/main" --data-root runs/probe --no-image-augment --image-cache --no-lbcl --no-dbcl "${CACHE[@]}"
      "${CLMLF[@]}" evaluate --checkpoint "$RUNS/main/best" --data-root runs/probe --dataset probe --split test \
        --threads 1 --no-progress ;;
    text)
      train "$RUNS/text-only" --data-root runs/probe --no-images --no-lbcl --no-dbcl "${CACHE[@]}" ;;
    ablation)
      for seed in $SEEDS; do
        common=(--data-root runs/probe-small --epochs "$EPOCHS" --stage1-epochs "$EPOCHS" --seed "$seed" "${SMALL_CACHE[@]}")
        for variant in ${ONLY:-mlf lbcl dbcl full}; do
          case $variant in
            mlf) train "$RUNS/ablation/mlf-s$seed" "${common[@]}" --no-lbcl --no-dbcl --no-image-augment --image-cache ;;
            lbcl) train "$RUNS/ablation/lbcl-s$seed" "${common[@]}" --no-dbcl --no-image-augment --image-cache ;;
            dbcl) train "$RUNS/ablation/dbcl-s$seed" "${common[@]}" --no-lbcl ;;  # RandAugment on both views
            augment) train "$RUNS/ablation/augment-s$seed" "${common[@]}" --no-lbcl --no-dbcl ;;  # RandAugment, CE only
            full) train "$RUNS/ablation/full-s$seed" "${common[@]}" ;;
          esac
        done
      done ;;
    analyse)
      "${CLMLF[@]}" probe attention --checkpoint "$RUNS/main/best" --data-root runs/probe --threads 1
      "${CLMLF[@]}" probe disagree --checkpoint "$RUNS/main/best" --data-root runs/probe --threads 1
      "${CLMLF[@]}" probe disagree --data-root runs/probe --threads 1 ;;   # the embedded default model
    *) echo "unknown step $step (data main text ablation analyse)" >&2; exit 2 ;;
  esac
done
