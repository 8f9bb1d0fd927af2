"""Batched augmentation ops with per-sample random parameters, vectorised in plain torch.

Same semantics as torchvision's RandomResizedCrop / RandomHorizontalFlip / ColorJitter /
RandomGrayscale, applied to a whole batch at once (torchvision v2 would share one draw across
the batch). Written out because kornia's colour jitter runs at a few thousand 32×32 images per
second on CPU, slower than the network it feeds. Images: float N×3×H×W in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, the coefficients of torchvision's rgb_to_grayscale


def _u(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(n, device=like.device, dtype=like.dtype).uniform_(lo, hi)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """N×3×H×W -> N×1×H×W luma."""
    w = torch.tensor(GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def adjust_brightness(x, f):
    return (x * f.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x, f):
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x, f):
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * grayscale(x)).clamp_(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / d) % 6, torch.where(maxc == g, (b - r) / d + 2, (r - g) / d + 4))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Closed form per channel: c_n = v − v·s·clamp(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6, n = 5, 3, 1."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)
    k = (n + 6.0 * h) % 6.0
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def adjust_hue(x, f):
    """Shift hue by f ∈ [-0.5, 0.5] (fraction of a full turn), per image."""
    hsv = rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + f.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(hsv).clamp_(0, 1)


def color_jitter(x, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8) -> torch.Tensor:
    """torchvision ColorJitter(b, c, s, h) applied with probability p, factors drawn per image;
    the four adjustments run in one random order per batch."""
    n = len(x)
    apply = torch.rand(n, device=x.device) < p
    ops = [
        (adjust_brightness, _u(n, max(0.0, 1 - brightness), 1 + brightness, x)),
        (adjust_contrast, _u(n, max(0.0, 1 - contrast), 1 + contrast, x)),
        (adjust_saturation, _u(n, max(0.0, 1 - saturation), 1 + saturation, x)),
        (adjust_hue, _u(n, -hue, hue, x)),
    ]
    y = x
    for k in torch.randperm(4).tolist():
        fn, f = ops[k]
        y = fn(y, f)
    return torch.where(apply.view(-1, 1, 1, 1), y, x)


def random_grayscale(x, p=0.2):
    mask = (torch.rand(len(x), device=x.device) < p).view(-1, 1, 1, 1)
    return torch.where(mask, grayscale(x).expand_as(x), x)


def random_hflip(x, p=0.5):
    mask = (torch.rand(len(x), device=x.device) < p).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(-1), x)


def random_resized_crop(x, size: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """Per image: area fraction ~ U(scale), log aspect ~ U(log ratio), box clipped to the image,
    position uniform; bilinear resample to size×size (one affine grid_sample for the batch)."""
    n = len(x)
    area = _u(n, *scale, x)
    logr = _u(n, math.log(ratio[0]), math.log(ratio[1]), x)
    r = torch.exp(logr)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = w / 2 + torch.rand_like(w) * (1 - w)
    cy = h / 2 + torch.rand_like(h) * (1 - h)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w, 2 * cx - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
    grid = F.affine_grid(theta, (n, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
