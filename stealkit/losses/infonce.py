"""InfoNCE (NT-Xent) between the stolen encoder's and the target's features: the ICML'22 "InfoNCE"
(Dziedzic et al., ICML 2022, arXiv:2205.07890; released steal.py, τ = 0.07) and, with τ = 0.5, the
symmetric loss of Cont-Steal's released code (Sha, He, Yu, Backes, Zhang, "Can't Steal? Cont-Steal!
Contrastive Stealing Attacks Against Image Encoders", CVPR 2023, arXiv:2201.07513; its Loss.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from stealkit.losses.base import LossConfig, PairLoss, check_pair, register_loss


def infonce_loss(stolen: torch.Tensor, target: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """NT-Xent over the 2N vectors z = [stolen; target]. N×D, N×D -> scalar.

    With z L2-normalised and s_ab = z_a·z_b / τ, for each of the 2N anchors a with positive p(a)
    (stolen_i <-> target_i):  ℓ_a = −log( exp(s_a,p(a)) / Σ_{b≠a} exp(s_ab) );  loss = mean_a ℓ_a.
    Negatives are the other images' stolen *and* target vectors.
    """
    s, t = check_pair(stolen, target)
    n = s.shape[0]
    z = F.normalize(torch.cat([s, t]), dim=1)
    sim = (z @ z.t()) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(2 * n, device=z.device).roll(n)  # stolen_i <-> target_i (built on device: CUDA-graph safe)
    return F.cross_entropy(sim, positives)


class InfoNCEConfig(LossConfig):
    temperature: float = Field(0.07, gt=0)


@register_loss("infonce")
class InfoNCELoss(PairLoss):
    Config = InfoNCEConfig

    def pair(self, stolen, target):
        return infonce_loss(stolen, target, self.config.temperature)
