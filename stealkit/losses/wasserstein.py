"""Wasserstein stealing loss (Dziedzic et al., ICML 2022, arXiv:2205.07890; released loss.py)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from stealkit.losses.base import LossConfig, PairLoss, check_pair, register_loss


def wasserstein_loss(stolen: torch.Tensor, target: torch.Tensor, normalize: str = "sum") -> torch.Tensor:
    """W1 between each pair (f_s(x_i), f_t(x_i)) read as 1-D distributions over the D coordinates, averaged
    over the batch. N×D, N×D -> scalar.

    normalize="sum" (released code): p = v / (Σ_d v_d + 1e-14), meant for non-negative features
    (post-ReLU pooling, as ResNet/CNN encoders here return); "softmax": p = softmax(v), for signed features.
    W1(p, q) = Σ_d | CDF_p(d) − CDF_q(d) |, CDF = cumulative sum over the coordinates.
    """
    s, t = check_pair(stolen, target)
    if normalize == "sum":
        p = s / (s.sum(dim=1, keepdim=True) + 1e-14)
        q = t / (t.sum(dim=1, keepdim=True) + 1e-14)
    elif normalize == "softmax":
        p, q = F.softmax(s, dim=1), F.softmax(t, dim=1)
    else:
        raise ValueError(f"normalize must be 'sum' or 'softmax', got {normalize!r}")
    return (p.cumsum(dim=1) - q.cumsum(dim=1)).abs().sum(dim=1).mean()


class WassersteinConfig(LossConfig):
    wasserstein_normalize: Literal["sum", "softmax"] = "sum"


@register_loss("wasserstein")
class WassersteinLoss(PairLoss):
    Config = WassersteinConfig

    def pair(self, stolen, target):
        return wasserstein_loss(stolen, target, self.config.wasserstein_normalize)
