#!/usr/bin/env bash
# The CIFAR-10 part of StolenEncoder on one GPU in one command (about 6 minutes on an H100/H200; limit 9):
# the shared victim imported (no pre-training), one paper-setting steal timed (2,500 queries, ResNet34,
# 100 epochs), Table X at 5% and 3% (four rows each) and Table II's CIFAR-10 rows, printed beside the
# paper's and written as JSON under $RUNS. Data comes staged (benchmarks/stage_gpu_data.py, <= 60 MiB).
#   here:        python benchmarks/stage_gpu_data.py --shared ../shared          # -> .devdata/paper
#   the device:  run(command="bash benchmarks/gpu_paper.sh", carry=[".devdata/paper"], timeout_s=560)
#   CPU smoke:   TINY=1 STAGE=/tmp/stage bash benchmarks/gpu_paper.sh           # after stage_gpu_data.py --tiny --out /tmp/stage
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="${STAGE:-.devdata/paper}"
RUNS="${RUNS:-runs/gpu_paper}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
if ! "$PY" -c "import pydantic" 2>/dev/null; then  # the device image lacks pydantic: the staged wheels
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$STAGE"/wheels/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
mkdir -p "$RUNS"
SK=("$PY" -m stealkit)
"${SK[@]}" import "$STAGE/victims/cifar10_simclr_resnet18" --arch resnet18 --cifar-stem --trained-on cifar10:train \
  --dataset-size 50000 --out "$RUNS/victim"
if [ -n "${TINY:-}" ]; then  # a CPU smoke run: the same steps at toy size
  SPEED=(--arch cnn_tiny --n 128 --epochs 1 --modes eager --precision fp32)
  SETS=(--set device=cpu --set surrogate.limit=64 --set probe.config.epochs=2
        --set attacks.0.config="{arch: cnn_tiny, epochs: 1, batch_size: 32}" --set attacks.1.config="{arch: cnn_tiny, epochs: 1, batch_size: 32}"
        --set attacks.2.config="{arch: cnn_tiny, epochs: 1, batch_size: 32}"
        --set attacks.3.config="{method: simclr, arch: cnn_tiny, epochs: 1, batch_size: 32}")
  SMALL=48
else
  SPEED=(--modes graph --precision bf16 fp32)
  SETS=()
  SMALL=1500
fi
"$PY" benchmarks/steal_speed.py "${SPEED[@]}" --out "$RUNS/steal_speed.json"
"${SK[@]}" run configs/paper_cifar10_gpu.yaml --data-root "$STAGE/data" --run-dir "$RUNS/table10_5" \
  --set victim.checkpoint="$RUNS/victim" "${SETS[@]}"
"${SK[@]}" run configs/paper_cifar10_gpu.yaml --data-root "$STAGE/data" --run-dir "$RUNS/table10_3" \
  --set victim.checkpoint="$RUNS/victim" "${SETS[@]}" --set surrogate.limit=$SMALL --set "downstream=[{name: gtsrb}]"
"$PY" benchmarks/paper_tables.py --run "5%=$RUNS/table10_5" --run "3%=$RUNS/table10_3" --speed "$RUNS/steal_speed.json" \
  --out "$RUNS/paper_tables.json"
if [ -n "${OUT:-}" ]; then  # the device tool brings back what is under $OUT
  cp "$RUNS/paper_tables.json" "$RUNS/steal_speed.json" "$OUT/"
  cp "$RUNS/table10_5/results.json" "$OUT/table10_5_results.json"; cp "$RUNS/table10_3/results.json" "$OUT/table10_3_results.json"
  cp "$RUNS/table10_5/report.md" "$OUT/table10_5_report.md"
fi
