"""The one in-memory form of every dataset: uint8 images N×3×H×W, int64 labels N, class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class ImageSet:
    """A labelled image set held in memory.

    images: uint8 tensor N×3×H×W (grey images are repeated to 3 channels).
    labels: int64 tensor N (-1 where unlabelled).
    classes: class names, index = label.
    name: e.g. "cifar10:train".
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = "imageset"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"{self.name}: images must be a uint8 tensor N×3×H×W, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.images)} images but labels of shape {tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices: torch.Tensor | list[int], name: str | None = None) -> "ImageSet":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx], list(self.classes), name or self.name, dict(self.meta))

    def sample(self, n: int, seed: int = 0, name: str | None = None) -> "ImageSet":
        """A uniform random subset of n images (without replacement), reproducible by seed."""
        if n > len(self):
            raise ValueError(f"{self.name}: asked for {n} images but the set has only {len(self)}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return self.subset(idx, name or f"{self.name}[{n}@{seed}]")

    def split(self, n_first: int, seed: int = 0) -> tuple["ImageSet", "ImageSet"]:
        """Disjoint random split into n_first and the rest."""
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self), generator=g)
        return self.subset(perm[:n_first].sort().values), self.subset(perm[n_first:].sort().values)

    def resized(self, size: int) -> "ImageSet":
        return ImageSet(resize_uint8(self.images, size), self.labels, list(self.classes), self.name, dict(self.meta))


def to_three_channels(images: torch.Tensor) -> torch.Tensor:
    """N×1×H×W or N×H×W grey -> N×3×H×W by repeating the channel (as the paper does for MNIST)."""
    if images.ndim == 3:
        images = images[:, None]
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()
    return images


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 N×C×H×W to N×C×size×size, in chunks to bound memory."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))
