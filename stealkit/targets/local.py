"""LocalTarget: an encoder (plus an optional defence) queried in-process, as an EaaS API would answer."""

from __future__ import annotations

import torch

from stealkit.models.encoder import embed
from stealkit.targets.base import Target


class LocalTarget(Target):
    """Wraps an encoder; `defence(features, images=..., account=...)` post-processes answers if given."""

    def __init__(self, encoder, defence=None, budget: int | None = None, account: str = "local", batch_size: int = 512):
        super().__init__(budget)
        self.encoder = encoder.eval()
        self.defence = defence
        self.account = account
        self.batch_size = batch_size

    @property
    def feature_dim(self) -> int:
        return self.encoder.feature_dim

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        feats = embed(self.encoder, images, batch_size=self.batch_size)
        if self.defence is not None:
            feats = self.defence(feats, images=images, account=self.account)
        return feats.float()
