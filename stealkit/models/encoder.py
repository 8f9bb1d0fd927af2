"""Encoder: raw images in, feature vectors out; it owns its preprocessing.

Every consumer (pre-training, target, probes, server) feeds the same raw images: uint8 in
[0, 255] or float in [0, 1], N×3×H×W. The encoder resizes to `input_size` if needed, normalises
with its own mean/std and returns N×D features (D = `feature_dim`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from stealkit.models.architectures import build_backbone

EMBED_PIXELS = 64 * 224 * 224  # images per forward pass in `embed`: at most this many input pixels (64 at 224 px)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class EncoderSpec:
    """Everything needed to rebuild an encoder (stored in the checkpoint's JSON sidecar)."""

    arch: str = "resnet18"
    input_size: int = 32
    cifar_stem: bool = True
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    feature_dim: int | None = None  # filled in by the builder: out_dim if set, else the backbone's
    out_dim: int | None = None  # a linear head maps the backbone's features to out_dim (e.g. to match a target)
    fc: bool = False  # the linear head even when the widths agree (a torchvision ResNet's fc, e.g. Cont-Steal's 512→512)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown encoder spec keys {sorted(unknown)}")
        known["mean"], known["std"] = tuple(known.get("mean", CIFAR10_MEAN)), tuple(known.get("std", CIFAR10_STD))
        return cls(**known)


class Encoder(nn.Module):
    """images (uint8 or float in [0,1], N×3×H×W) -> features N×D."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.backbone, dim = build_backbone(spec.arch, spec.cifar_stem)
        self.head = nn.Identity()
        if spec.fc or (spec.out_dim is not None and spec.out_dim != dim):
            out = spec.out_dim if spec.out_dim is not None else dim
            self.head = nn.Linear(dim, out)
            dim = out
        if spec.feature_dim not in (None, dim):
            raise ValueError(f"{spec.arch} has feature dimension {dim}, spec says {spec.feature_dim}")
        spec.feature_dim = dim
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return int(self.spec.feature_dim)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0,1] float N×3×H×W -> normalised float N×3×S×S (S = input_size)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images N×3×H×W, got shape {tuple(images.shape)}")
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        s = self.spec.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        if is_channels_last(self):  # NHWC weights (a fast training or extraction path): feed NHWC too
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.preprocess(images)))


def build_encoder(arch: str = "resnet18", input_size: int = 32, cifar_stem: bool | None = None, **kw) -> Encoder:
    """Registry entry point: `build_encoder("resnet34")`. cifar_stem defaults to input_size <= 64."""
    if cifar_stem is None:
        cifar_stem = input_size <= 64
    return Encoder(EncoderSpec(arch=arch, input_size=input_size, cifar_stem=cifar_stem, **kw))


def _first_conv_weight(module: nn.Module) -> torch.Tensor | None:
    return next((p for p in module.parameters() if p.dim() == 4), None)


def is_channels_last(module: nn.Module) -> bool:
    """Whether the module's convolution weights are stored NHWC (channels_last)."""
    w = _first_conv_weight(module)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


@contextmanager
def memory_format(module: nn.Module, channels_last: bool):
    """Run `module` with its 4-D weights NHWC (channels_last=True) or NCHW, and put them back afterwards."""
    was = is_channels_last(module)
    if _first_conv_weight(module) is None or was == channels_last:
        yield module
        return
    module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    try:
        yield module
    finally:
        module.to(memory_format=torch.channels_last if was else torch.contiguous_format)


@torch.no_grad()
def embed(encoder: nn.Module, images: torch.Tensor, batch_size: int = 512, device: torch.device | None = None,
          amp: bool = False, fast: bool = False, progress: bool = False, desc: str = "features") -> torch.Tensor:
    """Features of a uint8 image tensor, in eval mode, batch by batch -> float32 N×D on CPU.

    Exact by default: fp32, NCHW weights, TF32 off on CUDA. These are the API's answers and the defences'
    inputs; they do not depend on how the encoder was last trained or on the fast-path settings, and bf16
    would round them to ~2⁻⁸ relative precision, coarser than the rounding defence of Table XIV.
    fast=True runs NHWC (channels_last) where `runtime.channels_last_enabled`, still fp32 (differences
    ~1e-6 relative): for the probes' features. Batches hold at most EMBED_PIXELS input pixels (64 images at
    224 px): images stay uint8 at their stored size and are resized a batch at a time, so features of N
    images at 224 px never hold an N×3×224×224 float tensor. amp=True adds bf16 autocast where `runtime.bf16_enabled`:
    for monitors where speed matters more (the kNN monitor)."""
    from stealkit.runtime import autocast, channels_last_enabled, exact_fp32

    device = torch.device(device or next(encoder.parameters()).device)
    side = getattr(getattr(encoder, "spec", None), "input_size", None) or (images.shape[-1] if images.ndim == 4 else 32)
    batch_size = max(1, min(batch_size, EMBED_PIXELS // (side * side)))  # bounded memory at any input size
    was_training = encoder.training
    encoder.eval()
    out = []
    exact = not (amp or fast)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False)
    with memory_format(encoder, fast and channels_last_enabled(device)):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True)
            with autocast(device, enabled=amp), (exact_fp32(device) if exact else nullcontext()):
                out.append(encoder(x).float().cpu())
            bar.update(len(x))
    bar.close()
    encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, getattr(encoder, "feature_dim", 0))
