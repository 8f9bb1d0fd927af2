"""Cont-Steal's one-sided InfoNCE (Sha, He, Yu, Backes, Zhang, "Can't Steal? Cont-Steal! Contrastive
Stealing Attacks Against Image Encoders", CVPR 2023, arXiv:2201.07513, Section 4): anchor f_s(A(x_i)),
positive f_t(x_i), negatives f_t(x_j), j ≠ i. The released code's loss is the symmetric NT-Xent of
`infonce.py` at τ = 0.5; this one is the `cont-steal-fixed-view` attack's (|D| queries)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from stealkit.losses.base import LossConfig, PairLoss, check_pair, register_loss


def cont_steal_loss(stolen_aug: torch.Tensor, target: torch.Tensor, temperature: float = 0.1,
                    stolen_negatives: bool = False) -> torch.Tensor:
    """stolen_aug: f_s(A(x)) N×D, target: f_t(x) N×D -> scalar.

    With u_i = f_s(A(x_i))/‖·‖, v_j = f_t(x_j)/‖·‖ and τ the temperature:
        ℓ_i = −log( exp(u_i·v_i/τ) / Σ_j exp(u_i·v_j/τ) ),  loss = mean_i ℓ_i,
    (the sum runs over all j, positive included). stolen_negatives=True also puts the other images'
    stolen embeddings u_k (k ≠ i) in the denominator.
    """
    s, t = check_pair(stolen_aug, target)
    u, v = F.normalize(s, dim=1), F.normalize(t, dim=1)
    logits = u @ v.t() / temperature
    if stolen_negatives:
        n = u.shape[0]
        uu = (u @ u.t() / temperature).masked_fill(torch.eye(n, dtype=torch.bool, device=u.device), float("-inf"))
        logits = torch.cat([logits, uu], dim=1)
    return F.cross_entropy(logits, torch.arange(u.shape[0], device=u.device))


class ContStealAnchorConfig(LossConfig):
    temperature: float = Field(0.1, gt=0)
    stolen_negatives: bool = False


@register_loss("cont-steal-anchor")
class ContStealAnchorLoss(PairLoss):
    Config = ContStealAnchorConfig

    def pair(self, stolen, target):
        return cont_steal_loss(stolen, target, self.config.temperature, self.config.stolen_negatives)
