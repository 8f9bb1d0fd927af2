"""Soft Nearest Neighbours stealing loss (Dziedzic et al., ICML 2022, arXiv:2205.07890; the loss of
Frosst, Papernot, Hinton, "Analyzing and Improving Representations with the Soft Nearest Neighbor
Loss", ICML 2019, arXiv:1902.01889)."""

from __future__ import annotations

import torch
from pydantic import Field

from stealkit.losses.base import LossConfig, PairLoss, check_pair, register_loss


def soft_nn_loss(stolen: torch.Tensor, target: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """Soft Nearest Neighbours loss on z = [stolen; target]. N×D, N×D -> scalar.

    Labels: z_a and z_b share a label iff they come from the same image (stolen_i, target_i).
    With d_ab = ‖z_a − z_b‖² (squared Euclidean, not normalised) and T the temperature:
        ℓ_a = −log( Σ_{b≠a, same label} exp(−d_ab/T) / Σ_{b≠a} exp(−d_ab/T) ),  loss = mean_a ℓ_a.
    Computed in log space (logsumexp); the released code evaluates log(1e-9 + ratio) instead, which
    differs only where the ratio is below ~1e-7. T = 100 is the released code's default.
    """
    s, t = check_pair(stolen, target)
    n = s.shape[0]
    z = torch.cat([s, t]).double()
    d = torch.cdist(z, z).pow(2)
    logits = (-d / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(2 * n, device=z.device).roll(n)  # stolen_i <-> target_i (built on device: CUDA-graph safe)
    log_ratio = logits.gather(1, positives[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)
    return (-log_ratio.mean()).float()


class SoftNNConfig(LossConfig):
    temperature: float = Field(100.0, gt=0)


@register_loss("softnn")
class SoftNNLoss(PairLoss):
    Config = SoftNNConfig

    def pair(self, stolen, target):
        return soft_nn_loss(stolen, target, self.config.temperature)
