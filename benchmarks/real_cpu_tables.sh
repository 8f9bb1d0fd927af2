#!/usr/bin/env bash
# The real-data tables on 2 CPU cores against the shared victim (../shared/victims/cifar10_simclr_resnet18):
# import it, then Table X and Table II's CIFAR-10 row (GTSRB, MNIST, Fashion-MNIST). The defences have their own
# protocol through the served API: benchmarks/defence_tradeoff_real_cpu.sh.
# Each run writes runs/<name>/results.json (device, precision, versions, seed, wall time, peak RSS; copied to
# benchmarks/results/<name>.json), report.md, plot.png. Table II's row is Table X's StolenEncoder steal (same settings, seed and victim bytes, so the same row key): the runner
# reuses it from $STEALKIT_CACHE/rows/<key>.
#   SHARED=../shared bash benchmarks/real_cpu_tables.sh            # about 1 hour on 2 free cores
#   ONLY=table10_real_cpu bash benchmarks/real_cpu_tables.sh       # one of them
#   RAW_PROBE=1 ...   # also probe the same stolen encoders with `mlp-raw` (raw features, no dropout) into
#                     # runs/<name>_mlp_raw and benchmarks/results/<name>.mlp_raw.json: old probe vs new, same encoders
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/real_victim.sh  # SHARED, STEALKIT_DATA, VICTIM (imported the first time)
mkdir -p benchmarks/results
for cfg in ${ONLY:-table10_real_cpu table2_real_cpu}; do
  stealkit run "configs/$cfg.yaml" --run-dir "runs/$cfg" ${EXTRA:-}
  cp "runs/$cfg/results.json" "benchmarks/results/${cfg}.json"  # the record, committed
  if [ -n "${RAW_PROBE:-}" ]; then
    stealkit run "configs/$cfg.yaml" --run-dir "runs/${cfg}_mlp_raw" --set probe.kind=mlp-raw ${EXTRA:-}
    cp "runs/${cfg}_mlp_raw/results.json" "benchmarks/results/${cfg}.mlp_raw.json"
  fi
done
