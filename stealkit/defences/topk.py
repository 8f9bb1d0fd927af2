"""Top-k features (Liu et al., "StolenEncoder", CCS 2022, arXiv:2201.05889, Section VII-A).

"The API resets the features, whose absolute values are not the top-k largest ones, to be 0."
features N×D -> N×D with, per row, the k entries of largest |f| kept and the other D−k set to 0
(exactly k non-zeros when the row has at least k non-zero entries; ties broken by torch.topk).
"""

from __future__ import annotations

import torch
from pydantic import Field

from stealkit.defences.base import Defence, DefenceConfig, register_defence


class TopKConfig(DefenceConfig):
    k: int = Field(ge=1)  # features kept per answer


@register_defence("topk")
class TopK(Defence):
    Config = TopKConfig

    @property
    def k(self) -> int:
        return self.config.k

    def __call__(self, features: torch.Tensor, *, images=None, account: str = "anonymous") -> torch.Tensor:
        if self.k >= features.shape[1]:
            return features
        idx = features.abs().topk(self.k, dim=1).indices
        return torch.zeros_like(features).scatter_(1, idx, features.gather(1, idx))
