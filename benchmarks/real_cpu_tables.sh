#!/usr/bin/env bash
# The real-data tables on 2 CPU cores against the shared victim (../shared/victims/cifar10_simclr_resnet18):
# import it, then Table X (+ Table II-style rows on GTSRB, MNIST, Fashion-MNIST) and the defence table.
# Each run writes runs/<name>/results.json (device, versions, seed, wall time; copied to benchmarks/results/<name>.json),
# report.md, plot.png.
#   SHARED=../shared bash benchmarks/real_cpu_tables.sh            # about 1.5 hours on 2 free cores
#   ONLY=table10_real_cpu bash benchmarks/real_cpu_tables.sh       # one of them
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared}"
export STEALKIT_DATA="${STEALKIT_DATA:-$SHARED/data}"
VICTIM=runs/victims/cifar10_simclr_resnet18
[ -f "$VICTIM.safetensors" ] || stealkit import "$SHARED/victims/cifar10_simclr_resnet18" --arch resnet18 --cifar-stem \
  --mean cifar10 --std cifar10 --trained-on cifar10:train --dataset-size 50000 --out "$VICTIM"
for cfg in ${ONLY:-table10_real_cpu table2_real_cpu defences_real_cpu}; do
  # Table II's row and the defence table's undefended row are Table X's StolenEncoder steal (same settings,
  # seed and victim bytes, so the same row key): a run directory reuses a finished row found in another.
  mkdir -p "runs/$cfg/rows"
  for other in runs/table10_real_cpu runs/table2_real_cpu runs/defences_real_cpu; do
    [ "$other" = "runs/$cfg" ] || [ ! -d "$other/rows" ] || cp -rn "$other"/rows/. "runs/$cfg/rows/" 2>/dev/null || true
  done
  /usr/bin/time -v stealkit run "configs/$cfg.yaml" --run-dir "runs/$cfg" ${EXTRA:-} 2> "runs/$cfg.time" || { cat "runs/$cfg.time" >&2; exit 1; }
  grep -E "Elapsed|Maximum resident" "runs/$cfg.time"
  mkdir -p benchmarks/results && cp "runs/$cfg/results.json" "benchmarks/results/${cfg}.json"  # the record, committed
done
