"""Feature rounding (Liu et al., "StolenEncoder", CCS 2022, arXiv:2201.05889, Section VII-B): each
feature rounded to m decimals.

features N×D -> N×D, e.g. 0.0123 -> 0.01 for m = 2 (the float32 nearest to the rounded decimal).
"""

from __future__ import annotations

import torch
from pydantic import Field

from stealkit.defences.base import Defence, DefenceConfig, register_defence


class RoundingConfig(DefenceConfig):
    m: int = Field(2, ge=0)  # decimals kept


@register_defence("rounding")
class Rounding(Defence):
    Config = RoundingConfig

    @property
    def m(self) -> int:
        return self.config.m

    def __call__(self, features: torch.Tensor, *, images=None, account: str = "anonymous") -> torch.Tensor:
        return torch.round(features, decimals=self.m)
