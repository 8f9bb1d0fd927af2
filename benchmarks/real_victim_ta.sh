#!/usr/bin/env bash
# The shared real victim (a provider's CIFAR-10 SimCLR ResNet18, plain torchvision state dict in three fp16
# safetensors shards) imported with `stealkit import`, then its TA with the StolenEncoder paper's MLP probe
# (512-256, Adam 1e-4, batch 256, 500 epochs) on the full GTSRB and MNIST train/test splits.
# Writes benchmarks/results/real_victim_ta_cpu.json (device, versions, seed, wall time). About an hour on 2 cores.
#   SHARED=../shared bash benchmarks/real_victim_ta.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared}"
export STEALKIT_DATA="${STEALKIT_DATA:-$SHARED/data}"
OUT="${OUT:-benchmarks/results/real_victim_ta_cpu.json}"
VICTIM=runs/victims/cifar10_simclr_resnet18
stealkit import "$SHARED/victims/cifar10_simclr_resnet18" --arch resnet18 --cifar-stem \
  --mean cifar10 --std cifar10 --trained-on cifar10:train --dataset-size 50000 --out "$VICTIM"
stealkit evaluate "$VICTIM" -d gtsrb -d mnist ${EXTRA:-} --out "$OUT"
