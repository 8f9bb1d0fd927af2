#!/usr/bin/env bash
# Table XI at full scale on one GPU in one command (224 px, stolen ResNet34; configs/table11_real_world_gpu.yaml):
# EfficientNet-Lite0 served by `stealkit serve --normalize` on the GPU, stolen over HTTP, probed at 224 px,
# printed beside the paper's Table XI. Data, the imported victim and the wheels the device lacks come staged:
#   here:        stealkit import ... --out runs/victims/efficientnet_lite0   (benchmarks/table11_real_world_cpu.sh does it)
#                python benchmarks/stage_gpu_data.py --table11                 # -> .devdata/table11
#   the device:  run(command="bash benchmarks/gpu_table11.sh", carry=[".devdata/table11"], timeout_s=560)
#   CPU smoke:   DEVICE=cpu EXTRA="--set device=cpu --set surrogate.limit=64 ..." bash benchmarks/gpu_table11.sh
#                (tests/test_gpu_script_smoke.py runs it so at toy size, on a toy stage, in a copy of the tree)
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="${STAGE:-.devdata/table11}"
export PYTHONUNBUFFERED=1 PY="${PYTHON:-python3}"
if ! "$PY" -c "import pydantic, fastapi, uvicorn, httpx, multipart, prometheus_client" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$STAGE"/wheels/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
# `stealkit` as a command on PATH (the device has no entry point): a shell function put in the background
# would leave the server running after the trap has killed only the subshell around it
BIN="$(mktemp -d)"
trap 'rm -rf "$BIN"' EXIT
printf '#!/bin/sh\nexec "%s" -m stealkit "$@"\n' "$PY" > "$BIN/stealkit"
chmod +x "$BIN/stealkit"
export PATH="$BIN:$PATH"
mkdir -p runs/victims
cp -n "$STAGE"/victims/efficientnet_lite0.* runs/victims/
CONFIG=configs/table11_real_world_gpu.yaml DEVICE="${DEVICE:-cuda}" RUN="${RUN:-runs/table11_real_world_gpu}" \
  STEALKIT_DATA="$STAGE/data" bash benchmarks/table11_real_world_cpu.sh
if [ -n "${OUT:-}" ]; then cp -r "${RUN:-runs/table11_real_world_gpu}" "$OUT/"; fi
