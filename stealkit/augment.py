"""Batched image augmentation with per-sample randomness, on CPU or GPU.

Operations by name, as in SimCLR and StolenEncoder (Liu et al., CCS 2022, arXiv:2201.05889, Table VIII):
  crop   RandomResizedCrop(size, scale=(0.2, 1.0))       (SimCLR pre-training only by default)
  flip   RandomHorizontalFlip(p=0.5)
  jitter ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
  gray   RandomGrayscale(p=0.2)
and those of Cont-Steal's released code (Sha et al., "Can't Steal? Cont-Steal! Contrastive Stealing Attacks
Against Image Encoders", CVPR 2023, arXiv:2201.07513: RandAugment(2, 14) + RandomCrop(size, padding=4) + flip):
  randaugment  torchvision RandAugment(num_ops=2, magnitude=14), each image its own ops (on uint8)
  padcrop      RandomCrop(size, padding=4) at the images' own size: zero-pad 4 px, shift by at most 4 px
Input: uint8 or float in [0,1], N×3×H×W. Output: float in [0,1], N×3×H×W, each image with its own draw.
Backends: "torch" (default; our vectorised ops in augment_ops.py, about 10× kornia's speed for
colour jitter on CPU) or "kornia" (kornia.augmentation with the same parameters).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stealkit import augment_ops as ops

AUGMENTATIONS = ("crop", "flip", "jitter", "gray", "randaugment", "padcrop")
SIMCLR_AUGS = ("crop", "flip", "jitter", "gray")
STEAL_AUGS = ("flip", "jitter", "gray")
CONT_STEAL_AUGS = ("randaugment", "padcrop", "flip")


def _op(name: str, size: int, strength: float) -> nn.Module:
    """The kornia module of one operation (backend="kornia"; kornia is imported only then). kornia has no
    exact RandAugment / padded crop of torchvision's: those two run stealkit's own ops on either backend."""
    if name in ("randaugment", "padcrop"):
        return _TorchOp(name, size, strength)
    import kornia.augmentation as K

    s = strength
    if name == "crop":
        return K.RandomResizedCrop((size, size), scale=(0.2, 1.0))
    if name == "flip":
        return K.RandomHorizontalFlip(p=0.5)
    if name == "jitter":
        return K.ColorJitter(0.4 * s, 0.4 * s, 0.4 * s, 0.1 * s, p=0.8)
    if name == "gray":
        return K.RandomGrayscale(p=0.2)
    raise ValueError(f"unknown augmentation {name!r}; choose from {AUGMENTATIONS}")


def parse_augmentations(names: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """"flip+jitter+gray" or ["flip", "jitter"] or "none" -> ("flip", "jitter", "gray")."""
    if names is None or names == "none" or names == "":
        return ()
    if isinstance(names, str):
        names = [n for n in names.replace(",", "+").split("+") if n]
    out = tuple(n.strip().lower() for n in names)
    for n in out:
        if n not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {n!r}; choose from {AUGMENTATIONS} (joined with '+')")
    return out


class _TorchOp(nn.Module):
    def __init__(self, name: str, size: int, strength: float):
        super().__init__()
        self.name, self.size, self.s = name, size, strength

    def forward(self, x):
        if self.name == "crop":
            return ops.random_resized_crop(x, self.size)
        if self.name == "flip":
            return ops.random_hflip(x)
        if self.name == "jitter":
            return ops.color_jitter(x, 0.4 * self.s, 0.4 * self.s, 0.4 * self.s, 0.1 * self.s, p=0.8)
        if self.name == "randaugment":
            return ops.rand_augment(x, num_ops=2, magnitude=14)
        if self.name == "padcrop":
            return ops.random_pad_crop(x, padding=4)
        return ops.random_grayscale(x)


class Augmenter(nn.Module):
    """A composition of named augmentations applied to a whole batch with per-sample random parameters."""

    def __init__(self, names=SIMCLR_AUGS, size: int = 32, strength: float = 1.0, backend: str = "torch"):
        super().__init__()
        self.names = parse_augmentations(names)
        if backend not in ("torch", "kornia"):
            raise ValueError(f"unknown augmentation backend {backend!r}; choose torch or kornia")
        make = _op if backend == "kornia" else _TorchOp
        self.ops = nn.Sequential(*[make(n, size, strength) for n in self.names])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        if not self.names:
            return x
        return self.ops(x).clamp_(0.0, 1.0)

    @torch.no_grad()
    def apply_all(self, images: torch.Tensor, chunk: int = 8192, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A(x) for a whole image set, in chunks to bound memory -> `dtype` N×3×H×W in [0,1] on images' device."""
        return torch.cat([self(images[i : i + chunk]).to(dtype) for i in range(0, len(images), chunk)])

    def extra_repr(self) -> str:
        return "+".join(self.names) or "none"
