"""Batched image augmentation with per-sample randomness (kornia), on CPU or GPU.

Operations by name, as in SimCLR and StolenEncoder (Table VIII of 004):
  crop   RandomResizedCrop(size, scale=(0.2, 1.0))       (SimCLR pre-training only by default)
  flip   RandomHorizontalFlip(p=0.5)
  jitter ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
  gray   RandomGrayscale(p=0.2)
Input: uint8 or float in [0,1], N×3×H×W. Output: float in [0,1], N×3×H×W, each image with its own draw.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn as nn

AUGMENTATIONS = ("crop", "flip", "jitter", "gray")
SIMCLR_AUGS = ("crop", "flip", "jitter", "gray")
STEAL_AUGS = ("flip", "jitter", "gray")


def _op(name: str, size: int, strength: float) -> nn.Module:
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


class Augmenter(nn.Module):
    """A composition of named augmentations applied to a whole batch with per-sample random parameters."""

    def __init__(self, names=SIMCLR_AUGS, size: int = 32, strength: float = 1.0):
        super().__init__()
        self.names = parse_augmentations(names)
        self.ops = nn.Sequential(*[_op(n, size, strength) for n in self.names])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images
        if not self.names:
            return x
        return self.ops(x).clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return "+".join(self.names) or "none"
