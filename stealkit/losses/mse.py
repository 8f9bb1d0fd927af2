"""MSE stealing loss of Dziedzic, Dhawan, Kaleem, Guan, Papernot, "On the Difficulty of Defending
Self-Supervised Learning against Model Extraction", ICML 2022 (arXiv:2205.07890)."""

from __future__ import annotations

import torch

from stealkit.losses.base import LossConfig, PairLoss, check_pair, register_loss


def mse_loss(stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over all N·D entries of (f_s − f_t)² (torch.nn.MSELoss). N×D, N×D -> scalar."""
    s, t = check_pair(stolen, target)
    return (s - t).pow(2).mean()


@register_loss("mse")
class MSELoss(PairLoss):
    Config = LossConfig

    def pair(self, stolen, target):
        return mse_loss(stolen, target)
