#!/usr/bin/env bash
# The rotation watermark on the shared real victim, 2 CPU cores (README "Is this encoder mine?"):
#   1. embed the blog's binary rotation watermark into the shared CIFAR-10 SimCLR ResNet18 by fine-tuning it on
#      10,000 CIFAR-10 training images (`stealkit verify embed-watermark --victim`: rotation loss plus a
#      feature-preservation term against the victim as it was; about 20 minutes on an AMX Xeon);
#   2. what it costs honest users: TA before and after on GTSRB and MNIST (10,000 training images, the full test
#      splits, the released probe), same subsets and probe seeds for both encoders;
#   3. serve the watermarked victim and steal it over HTTP (configs/watermark_real_cpu.yaml: StolenEncoder and
#      InfoNCE at 500 and 2,500 tiny_imagenet32 queries);
#   4. read the watermark off the victim before and after, every copy stolen from either (this run and
#      benchmarks/verify_real_cpu.sh's, whose copies were stolen from the unmarked victim) and the independent
#      encoders of the dataset-inference table.
#   SHARED=../shared bash benchmarks/watermark_real_cpu.sh      (after benchmarks/verify_real_cpu.sh with DI=0)
# Writes benchmarks/results/watermark_ta_cpu.json, watermark_steal_cpu.json and watermark_real_cpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/real_victim.sh  # SHARED, STEALKIT_DATA, VICTIM (imported the first time)
RUN="${RUN:-runs/watermark_real_cpu}"
PORT=8767
WM=runs/victims/cifar10_simclr_resnet18_wm
mkdir -p "$RUN"
[ -f "$WM.safetensors" ] || stealkit verify embed-watermark --victim "$VICTIM" --data cifar10:train --limit 10000 --epochs 7 \
  --batch-size 128 --lr 2e-4 --head-lr 1e-3 --no-contrastive --preserve 1 --out "$WM"
[ "${TA:-1}" = 1 ] && stealkit evaluate "$VICTIM" "$WM" -d gtsrb -d mnist --train-limit 10000 --out benchmarks/results/watermark_ta_cpu.json
bash benchmarks/serve_and_run.sh "$WM" configs/watermark_real_cpu.yaml "$RUN" $PORT ${EXTRA:-}
cp "$RUN/results.json" benchmarks/results/watermark_steal_cpu.json
VERIFY_RUN=runs/verify_real_cpu  # copies of the unmarked victim (benchmarks/verify_real_cpu.sh)
UNMARKED=(); [ -f "$VERIFY_RUN/results.json" ] && UNMARKED=(--run "$VERIFY_RUN=stolen-unmarked")
python benchmarks/watermark_real.py --victim "$WM" \
  --suspect "watermarked victim=$WM" --kind "watermarked victim=victim" \
  --suspect "victim before the watermark=$VICTIM" --kind "victim before the watermark=unmarked" \
  --run "$RUN" "${UNMARKED[@]}" \
  --suspect "SimCLR on GTSRB=runs/independent/simclr_gtsrb" --kind "SimCLR on GTSRB=independent" \
  --suspect "SimCLR on tiny_imagenet32=runs/independent/simclr_tiny_imagenet32" --kind "SimCLR on tiny_imagenet32=independent" \
  --suspect "EfficientNet-Lite0 (ImageNet)=runs/victims/efficientnet_lite0" --kind "EfficientNet-Lite0 (ImageNet)=independent" \
  --suspect "random ResNet18 (seed 0)=random:resnet18:0" --kind "random ResNet18 (seed 0)=independent" \
  --suspect "random ResNet18 (seed 1)=random:resnet18:1" --kind "random ResNet18 (seed 1)=independent" \
  --out benchmarks/results/watermark_real_cpu.json
# The trade-off: a ten times stronger preservation weight, what it costs honest users (TA against the TA before,
# same subsets and probe seed as above) and how strongly the victim still carries the mark (about 35 minutes; P10=1).
[ "${P10:-0}" = 1 ] || exit 0  # P10=1: not run yet (README says so)
WM10=runs/victims/cifar10_simclr_resnet18_wm_p10
[ -f "$WM10.safetensors" ] || stealkit verify embed-watermark --victim "$VICTIM" --data cifar10:train --limit 10000 --epochs 7 \
  --batch-size 128 --lr 2e-4 --head-lr 1e-3 --no-contrastive --preserve 10 --out "$WM10"
stealkit evaluate "$VICTIM" "$WM10" -d gtsrb -d mnist --train-limit 10000 --out benchmarks/results/watermark_ta_p10_cpu.json
python benchmarks/watermark_real.py --victim "$WM10" --suspect "watermarked victim (preserve 10)=$WM10" \
  --kind "watermarked victim (preserve 10)=victim" --suspect "victim before the watermark=$VICTIM" \
  --kind "victim before the watermark=unmarked" --out benchmarks/results/watermark_p10_cpu.json
