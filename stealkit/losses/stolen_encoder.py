"""StolenEncoder's loss (Liu, Jia, Liu, Gong, "StolenEncoder: Stealing Pre-trained Encoders in
Self-supervised Learning", CCS 2022, arXiv:2201.05889, Eq. (3), (4), (6), (7) and Algorithm 1):
    L = L1 + λ·L2,  L1 = agg_x d(f_t(x), f_s(x)),  L2 = agg_x d(f_t(x), f_s(A(x)))
(L2' = agg_x d(f_t(A(x)), f_s(A(x))) in the query-aug variant, Eq. (4)).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from stealkit.losses.base import LossConfig, StealLoss, register_loss
from stealkit.losses.distance import feature_distance


def stolen_encoder_loss(
    target: torch.Tensor,
    stolen_clean: torch.Tensor,
    stolen_aug: torch.Tensor | None,
    lam: float = 20.0,
    distance: str = "l2",
    normalize: bool = False,
    reduction: str = "mean",
    target_aug: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (7) on a mini-batch -> (L, L1, L2).

    target: N×D answers f_t(x) from the API; stolen_clean: f_s(x); stolen_aug: f_s(A(x)) (None when λ=0).
    agg = mean over the batch (Algorithm 1) or sum (the authors' released code).
    With `target_aug` = f_t(A(x)) queried from the API, L2 becomes Eq. (4)'s L2' (query-aug variant).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    agg = torch.mean if reduction == "mean" else torch.sum
    l1 = agg(feature_distance(target, stolen_clean, distance, normalize))
    if stolen_aug is None or lam == 0:
        l2 = torch.zeros((), device=l1.device)
    else:
        ref = target if target_aug is None else target_aug
        l2 = agg(feature_distance(ref, stolen_aug, distance, normalize))
    return l1 + lam * l2, l1, l2


class StolenEncoderLossConfig(LossConfig):
    lam: float = Field(20.0, ge=0)  # λ (Section V-A: 20); 0 = the w/o-aug variant
    distance: Literal["l2", "l1", "cosine"] = "l2"
    normalize: bool = True  # L2-normalise both vectors before d (released code; the paper is silent)
    reduction: Literal["mean", "sum"] = "sum"  # sum over the batch (released code); Algorithm 1 writes the mean
    query_aug: bool = False  # L2 against f_t(A(x)) asked from the API every epoch (Eq. 4/5)


@register_loss("stolenencoder")
class StolenEncoderLoss(StealLoss):
    """Eq. (7): stolen views clean (+ aug when λ > 0); target view clean (+ aug for query-aug)."""

    Config = StolenEncoderLossConfig

    @property
    def stolen_views(self):
        return frozenset({"clean", "aug"} if self.config.lam > 0 or self.config.query_aug else {"clean"})

    @property
    def target_views(self):
        return frozenset({"clean", "aug"} if self.config.query_aug else {"clean"})

    def __call__(self, stolen, target):
        c = self.config
        return stolen_encoder_loss(target["clean"], stolen["clean"], stolen.get("aug"), c.lam, c.distance, c.normalize,
                                   c.reduction, target_aug=target.get("aug"))
