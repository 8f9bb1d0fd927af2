#!/usr/bin/env bash
# Which defence protects this encoder? (README; issue "A defence that spares honest users"), 2 CPU cores:
#   1. calibrate the coverage defences from the provider's own data (benchmarks/coverage_calibration.py: the
#      victim's CIFAR-10 training images as the broad reference sweep, GTSRB training images outside the
#      evaluated honest user's as known-honest traffic; no thief query) -> runs/coverage_rate_reference.json;
#   2. every setting of configs/tradeoff/defence_tradeoff_real_cpu.yaml through `stealkit serve` (honest user, thieves at
#      1,000 / 2,500 queries, sybil / averaging / re-normalising thieves), resumable;
#   3. the table and the trade-off plot (benchmarks/defence_tradeoff_report.py).
#   SHARED=../shared bash benchmarks/defence_tradeoff_real_cpu.sh [--only LABEL ...]
# Writes benchmarks/results/coverage_calibration_cpu.json, defence_tradeoff_real_cpu.json and
# docs/img/defence_tradeoff_real_cpu.png.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/real_victim.sh  # SHARED, STEALKIT_DATA, VICTIM (imported the first time)
[ -f runs/coverage_rate_reference.json ] || python benchmarks/coverage_calibration.py --victim "$VICTIM" \
  --out benchmarks/results/coverage_calibration_cpu.json --reference-out runs/coverage_rate_reference.json
python benchmarks/defence_tradeoff.py configs/tradeoff/defence_tradeoff_real_cpu.yaml \
  --out benchmarks/results/defence_tradeoff_real_cpu.json "$@"
python benchmarks/defence_tradeoff_report.py benchmarks/results/defence_tradeoff_real_cpu.json \
  --plot docs/img/defence_tradeoff_real_cpu.png
