"""Per-sample feature distances d(a, b) of StolenEncoder (Liu, Jia, Liu, Gong, "StolenEncoder: Stealing
Pre-trained Encoders in Self-supervised Learning", CCS 2022, arXiv:2201.05889, Section IV-B and Table VI)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISTANCES = ("l2", "l1", "cosine")


def feature_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "l2", normalize: bool = False) -> torch.Tensor:
    """Per-sample distance d(a_i, b_i) for a, b: N×D -> N.

    l2: ‖a−b‖₂ (not squared, as in Eq. (3) and the released code); l1: ‖a−b‖₁;
    cosine: 1 − cos(a, b). `normalize` L2-normalises both vectors first (the released code does).
    """
    a, b = a.float(), b.float()
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    if kind == "l2":
        return (a - b).pow(2).sum(dim=1).clamp_min(1e-12).sqrt()
    if kind == "l1":
        return (a - b).abs().sum(dim=1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=1)
    raise ValueError(f"unknown distance {kind!r}; choose from {DISTANCES}")
