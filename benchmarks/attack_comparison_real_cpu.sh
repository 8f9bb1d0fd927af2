#!/usr/bin/env bash
# The blog's attack comparison on the shared real victim through the served API (configs/attack_comparison_real_cpu.yaml:
# seven attacks at 500, 1,000 and 2,500 tiny_imagenet32 queries, probed on GTSRB and MNIST), 2 CPU cores.
#   SHARED=../shared bash benchmarks/attack_comparison_real_cpu.sh
# Writes benchmarks/results/attack_comparison_real_cpu.json and docs/img/attack_comparison_real_cpu.png (SA against
# #queries, a line per attack); python benchmarks/readme_tables.py renders the README's table from it.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/real_victim.sh  # SHARED, STEALKIT_DATA, VICTIM (imported the first time)
RUN="${RUN:-runs/attack_comparison_real_cpu}"
bash benchmarks/serve_and_run.sh "$VICTIM" configs/attack_comparison_real_cpu.yaml "$RUN" 8766 ${EXTRA:-}
cp "$RUN/results.json" benchmarks/results/attack_comparison_real_cpu.json
mkdir -p docs/img && cp "$RUN/plot.png" docs/img/attack_comparison_real_cpu.png
