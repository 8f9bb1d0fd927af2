"""Batched augmentation ops with per-sample random parameters, vectorised in plain torch.

Same semantics as torchvision's RandomResizedCrop / RandomHorizontalFlip / ColorJitter /
RandomGrayscale / RandomCrop(padding), applied to a whole batch at once (torchvision v2 would share
one draw across the batch). Written out because kornia's colour jitter runs at a few thousand 32×32
images per second on CPU, slower than the network it feeds. RandAugment is torchvision's own, called
with one draw per image (grouped by the op drawn). Images: float N×3×H×W in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

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


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """float images in [0, 1] -> uint8 (rounded, clamped): what an API is sent, and what a view is stored as."""
    return images01.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def random_pad_crop(x, padding: int = 4):
    """torchvision RandomCrop(size, padding) at the images' own size, per image: zero-pad `padding` pixels on
    every side, then cut an H×W window at an offset drawn uniformly from {0, …, 2·padding} on each axis,
    i.e. the content moves by at most `padding` pixels in x and in y (one gather per axis for the batch)."""
    n, c, h, w = x.shape
    p = int(padding)
    if p <= 0:
        return x
    xp = F.pad(x, (p, p, p, p))
    oy = torch.randint(0, 2 * p + 1, (n,), device=x.device)
    ox = torch.randint(0, 2 * p + 1, (n,), device=x.device)
    rows = (oy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * p)
    y = xp.gather(2, rows)
    cols = (ox.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return y.gather(3, cols)


_RAND_AUGMENT: dict[tuple[int, int], v2.RandAugment] = {}


def rand_augment(x, num_ops: int = 2, magnitude: int = 14):
    """torchvision.transforms.v2.RandAugment(num_ops, magnitude) (31 magnitude bins) with its own draw for every
    image, on uint8 (the ops torchvision defines for PIL-like images: posterize, solarize, equalize).

    torchvision applies one draw to a whole batch tensor, so the draws are made here image after image, in the
    order and from the generator torchvision's own forward uses (torch's global CPU generator: a seeded run
    repeats), and each drawn op is then applied to all the images that drew it, in one call per (op, signed
    magnitude): the result equals calling the transform on every image in turn (tests/test_augment_ops.py),
    about 4× faster on CPU. Where this torchvision lacks the internals used for that, the images go through
    the transform one by one. float N×3×H×W in [0,1] (or uint8) -> float N×3×H×W in [0,1] on x's device."""
    ra = _RAND_AUGMENT.setdefault((num_ops, magnitude), v2.RandAugment(num_ops=num_ops, magnitude=magnitude))
    u8 = x if x.dtype == torch.uint8 else to_uint8(x)
    if not len(u8):
        return u8.float()
    space = getattr(ra, "_AUGMENTATION_SPACE", None)
    if space is None or not hasattr(ra, "_apply_image_or_video_transform"):
        return torch.stack([ra(img) for img in u8.cpu()]).to(x.device).float().div_(255.0)
    h, w = u8.shape[-2:]
    names = list(space)
    table = {}  # op -> (its magnitude at `magnitude`, or None for ops without one; signed?)
    for name, (magnitudes, signed) in space.items():
        m = magnitudes(ra.num_magnitude_bins, h, w)
        table[name] = (None if m is None else float(m[ra.magnitude]), signed)
    plan = []  # per image, its num_ops (op, magnitude) pairs, drawn as RandAugment.forward draws them
    for _ in range(len(u8)):
        row = []
        for _ in range(num_ops):
            name = names[int(torch.randint(len(names), ()))]
            m, signed = table[name]
            if m is None:
                m = 0.0
            elif signed and torch.rand(()) <= 0.5:
                m = -m
            row.append((name, m))
        plan.append(row)
    out = u8.clone()
    for k in range(num_ops):
        groups: dict[tuple[str, float], list[int]] = {}
        for i, row in enumerate(plan):
            groups.setdefault(row[k], []).append(i)
        for (name, m), idx in groups.items():
            sel = torch.tensor(idx, device=out.device)
            out[sel] = ra._apply_image_or_video_transform(out[sel], name, m, interpolation=ra.interpolation, fill=ra._fill)
    return out.to(x.device).float().div_(255.0)
