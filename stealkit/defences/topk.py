"""Top-k features (StolenEncoder, 004, Section VII-A).

"The API resets the features, whose absolute values are not the top-k largest ones, to be 0."
features N×D -> N×D with, per row, the k entries of largest |f| kept and the other D−k set to 0
(exactly k non-zeros when the row has at least k non-zero entries; ties broken by torch.topk).
"""

from __future__ import annotations

import torch

from stealkit.defences.base import Defence, register_defence


@register_defence("topk")
class TopK(Defence):
    def __init__(self, k: int):
        if int(k) < 1:
            raise ValueError(f"top-k needs k >= 1, got {k}")
        self.k = int(k)

    def __call__(self, features: torch.Tensor, *, images=None, account: str = "anonymous") -> torch.Tensor:
        if self.k >= features.shape[1]:
            return features
        idx = features.abs().topk(self.k, dim=1).indices
        return torch.zeros_like(features).scatter_(1, idx, features.gather(1, idx))

    def __repr__(self) -> str:
        return f"TopK(k={self.k})"
