"""Sets that need no download: scikit-learn's handwritten `digits` and the project's `synthetic` shapes.

Both return uint8 N×3×size×size ImageSets in well under 2 s and are deterministic.
"""

from __future__ import annotations

import numpy as np
import torch

from stealkit.data.imageset import ImageSet, resize_uint8, to_three_channels

DIGITS_TEST = 450  # 1,797 images -> 1,347 train / 450 test
DIGITS_SEED = 0
SYNTHETIC_NATIVE = 32
SYNTHETIC_PER_CLASS = {"train": 500, "test": 200}  # 5,000 / 2,000 images
SYNTHETIC_SEEDS = {"train": 0, "test": 1}
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "star", "crescent", "stripes", "checker")


def _check_split(name: str, split: str, splits) -> None:
    if split not in splits:
        raise ValueError(f"{name}: unknown split {split!r}; choose from {sorted(splits)}")


def digits_split_indices(split: str) -> np.ndarray:
    """Sorted indices into sklearn's load_digits() for our fixed stratified split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_split("digits", split, ("train", "test"))
    y = load_digits().target
    train, test = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST, random_state=DIGITS_SEED, stratify=y
    )
    return np.sort(train if split == "train" else test)


def load_digits_set(split: str = "train", size: int = 32) -> ImageSet:
    """sklearn digits (8×8 grey, values 0..16) -> uint8 N×3×size×size; 1,347 train / 450 test, 10 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    idx = digits_split_indices(split)
    grey = np.rint(bunch.images[idx] * (255.0 / 16.0)).astype(np.uint8)  # N×8×8
    images = to_three_channels(resize_uint8(torch.from_numpy(grey)[:, None], size))
    labels = torch.from_numpy(bunch.target[idx].astype(np.int64))
    meta = {"source": "embedded", "path": "sklearn.datasets.load_digits", "indices": "digits_split_indices"}
    return ImageSet(images, labels, [str(i) for i in range(10)], f"digits:{split}", meta)


# ---------------------------------------------------------------- synthetic shapes


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of one shape in local coordinates (unit radius, y pointing down)."""
    au, av, r = np.abs(u), np.abs(v), np.hypot(u, v)
    box = np.maximum(au, av)
    if kind == "circle":
        return r < 1.0
    if kind == "square":
        return box < 0.8
    if kind == "triangle":
        return (v > -0.9) & (v < 0.7) & (au < (v + 0.9) * 0.6)
    if kind == "diamond":
        return au + av < 1.0
    if kind == "ring":
        return (r < 1.0) & (r > 0.6)
    if kind == "cross":
        return ((au < 0.28) | (av < 0.28)) & (box < 1.0)
    if kind == "star":
        return r < 0.45 + 0.25 * (np.cos(5 * np.arctan2(v, u)) + 1)
    if kind == "crescent":
        return (r < 1.0) & (np.hypot(u - 0.45, v) > 0.75)
    if kind == "stripes":
        return (box < 0.9) & (np.sin(u * 2.5 * np.pi) > 0)
    if kind == "checker":
        return (box < 0.9) & ((np.floor(u * 2.2) + np.floor(v * 2.2)) % 2 == 0)
    raise ValueError(kind)


def make_synthetic(n_per_class: int, seed: int = 0, size: int = 32) -> ImageSet:
    """Coloured shapes/textures, class = shape (see SHAPES), with random colour, position, scale,
    small rotation, background gradient and pixel noise. Rendered at 32×32, resized to `size`.

    Returns uint8 N×3×size×size, N = 10·n_per_class, labels interleaved 0,1,…,9,0,1,…
    """
    rng = np.random.default_rng(seed)
    k, s = len(SHAPES), SYNTHETIC_NATIVE
    n = k * n_per_class
    labels = np.arange(n) % k
    grid = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
    y, x = np.meshgrid(grid, grid, indexing="ij")

    centre = rng.uniform(-0.25, 0.25, (n, 2)).astype(np.float32)
    scale = rng.uniform(0.45, 0.72, n).astype(np.float32)
    theta = rng.uniform(-0.3, 0.3, n).astype(np.float32)
    bg = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    direction = rng.standard_normal((n, 3)).astype(np.float32)
    direction *= rng.uniform(0.5, 0.9, (n, 1)) / np.linalg.norm(direction, axis=1, keepdims=True)
    up, down = np.clip(bg + direction, 0, 1), np.clip(bg - direction, 0, 1)
    pick_up = np.linalg.norm(up - bg, axis=1) >= np.linalg.norm(down - bg, axis=1)
    fg = np.where(pick_up[:, None], up, down)
    grad_dir = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    grad_amp = rng.uniform(0, 0.15, n).astype(np.float32)
    noise = rng.standard_normal((n, 3, s, s), dtype=np.float32)
    noise_amp = rng.uniform(0.02, 0.08, n).astype(np.float32)

    dx, dy = x[None] - centre[:, 0, None, None], y[None] - centre[:, 1, None, None]
    c, si = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (c * dx + si * dy) / scale[:, None, None]
    v = (-si * dx + c * dy) / scale[:, None, None]
    mask = np.zeros((n, s, s), dtype=bool)
    for cls, kind in enumerate(SHAPES):
        sel = labels == cls
        mask[sel] = _shape_mask(kind, u[sel], v[sel])

    ramp = np.cos(grad_dir)[:, None, None] * x + np.sin(grad_dir)[:, None, None] * y  # n×s×s
    background = bg[:, :, None, None] + (grad_amp[:, None, None] * ramp)[:, None]
    img = np.where(mask[:, None], fg[:, :, None, None], background)
    img += noise_amp[:, None, None, None] * noise
    images = torch.from_numpy(np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8))
    meta = {"source": "embedded", "path": "stealkit.data.embedded.make_synthetic", "seed": seed}
    return ImageSet(resize_uint8(images, size), torch.from_numpy(labels.astype(np.int64)), list(SHAPES), "synthetic", meta)


def load_synthetic_set(split: str = "train", size: int = 32) -> ImageSet:
    """The registered `synthetic` set: 5,000 train (seed 0) / 2,000 test (seed 1) images, 10 classes."""
    _check_split("synthetic", split, SYNTHETIC_PER_CLASS)
    data = make_synthetic(SYNTHETIC_PER_CLASS[split], SYNTHETIC_SEEDS[split], size)
    data.name = f"synthetic:{split}"
    return data


EMBEDDED = {
    "digits": (load_digits_set, ("train", "test")),
    "synthetic": (load_synthetic_set, tuple(SYNTHETIC_PER_CLASS)),
}
