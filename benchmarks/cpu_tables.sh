#!/usr/bin/env bash
# Re-runs every CPU-sized experiment config (embedded data, no download) and collects their
# report.md tables into docs/cpu_tables.md. About 10-15 minutes on 2 CPU cores.
#   bash benchmarks/cpu_tables.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/cpu_tables}"
mkdir -p "$runs"
# Victims trained afresh into the run directory (not reused from ~/.cache/stealkit, where a victim
# trained under another thread count can differ in its last digits).
export STEALKIT_CACHE="${STEALKIT_CACHE:-$runs/cache}"
out=docs/cpu_tables.md
[ -f runs/cpu_victim_wm.safetensors ] || stealkit verify embed-watermark --data digits:train --size 16 --arch cnn_tiny \
    --epochs 20 --weight 3 --batch-size 128 --lr 0.003 --out runs/cpu_victim_wm
{
  echo "# CPU-sized experiments"
  echo
  echo "Produced by \`bash benchmarks/cpu_tables.sh\` ($(date -u +%Y-%m-%d), $(python -c 'import torch, platform; print("torch", torch.__version__, "python", platform.python_version())'), $(nproc) CPU cores)."
  echo "Each section is the report.md of \`stealkit run configs/NAME.yaml\`; the configs say what each compares."
} > "$out"
for name in quickstart_http defences_cpu compare_losses_cpu verify_cpu attack_defence_matrix_cpu; do
  if [ "$name" = quickstart_http ]; then
    stealkit quickstart --serve --run-dir "$runs/$name" > "$runs/$name.log" 2>&1
  else
    stealkit run "configs/$name.yaml" --run-dir "$runs/$name" > "$runs/$name.log" 2>&1
  fi
  { echo; echo "## $name"; echo; sed 's/^# /### /' "$runs/$name/report.md" | sed '/^!\[plot\]/d'; } >> "$out"
  if [ "$name" = quickstart_http ]; then
    { echo; echo "Ledger view (ledger_view.json):"; echo; echo '```'; cat "$runs/$name/ledger_view.json"; echo; echo '```'; } >> "$out"
  fi
  echo "done: $name"
done
