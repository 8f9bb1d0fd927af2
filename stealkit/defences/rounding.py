"""Feature rounding (StolenEncoder, 004, Section VII-B): each feature rounded to m decimals.

features N×D -> N×D, e.g. 0.0123 -> 0.01 for m = 2 (the float32 nearest to the rounded decimal).
"""

from __future__ import annotations

import torch

from stealkit.defences.base import Defence, register_defence


@register_defence("rounding")
class Rounding(Defence):
    def __init__(self, m: int = 2):
        if int(m) < 0:
            raise ValueError(f"rounding needs m >= 0 decimals, got {m}")
        self.m = int(m)

    def __call__(self, features: torch.Tensor, *, images=None, account: str = "anonymous") -> torch.Tensor:
        return torch.round(features, decimals=self.m)

    def __repr__(self) -> str:
        return f"Rounding(m={self.m})"
