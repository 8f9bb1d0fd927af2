"""LocalTarget: an encoder (plus an optional defence) queried in-process, as an EaaS API would answer."""

from __future__ import annotations

import torch

from stealkit.targets.answers import api_answers
from stealkit.targets.base import Target


class LocalTarget(Target):
    """Wraps an encoder; answers are L2-normalised if `normalize` (before the defence) and post-processed
    by `defence(features, images=..., account=...)` if given (see `stealkit.targets.answers`)."""

    def __init__(self, encoder, defence=None, budget: int | None = None, account: str = "local", batch_size: int = 512,
                 normalize: bool = False):
        super().__init__(budget)
        self.encoder = encoder.eval()
        self.defence = defence
        self.account = account
        self.batch_size = batch_size
        self.normalize = normalize

    @property
    def feature_dim(self) -> int:
        return self.encoder.feature_dim

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        return api_answers(self.encoder, images, normalize=self.normalize, defence=self.defence, account=self.account,
                           batch_size=self.batch_size)
