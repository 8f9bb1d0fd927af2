# Sourced by the real-data CPU benchmarks from the repository root: SHARED (default ../shared), STEALKIT_DATA
# (default $SHARED/data), VICTIM (the shared CIFAR-10 SimCLR ResNet18, imported with `stealkit import` the
# first time: three fp16 safetensors shards -> a stealkit checkpoint with its normalisation and provenance).
#   . benchmarks/real_victim.sh
SHARED="${SHARED:-../shared}"
export STEALKIT_DATA="${STEALKIT_DATA:-$SHARED/data}"
VICTIM=runs/victims/cifar10_simclr_resnet18
[ -f "$VICTIM.safetensors" ] || stealkit import "$SHARED/victims/cifar10_simclr_resnet18" --arch resnet18 --cifar-stem \
  --mean cifar10 --std cifar10 --trained-on cifar10:train --dataset-size 50000 --out "$VICTIM"
