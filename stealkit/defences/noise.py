"""Gaussian output noise: features + N(0, sigma²) per entry (a baseline output perturbation).

features N×D -> N×D. `seed` makes the draws reproducible (one generator for the defence).
"""

from __future__ import annotations

import torch
from pydantic import Field

from stealkit.defences.base import Defence, DefenceConfig, register_defence


class NoiseConfig(DefenceConfig):
    sigma: float = Field(ge=0)  # standard deviation per entry
    seed: int | None = None  # None: a fresh random stream


@register_defence("noise")
class GaussianNoise(Defence):
    Config = NoiseConfig

    def setup(self) -> None:
        self.generator = torch.Generator()
        if self.config.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(self.config.seed))

    @property
    def sigma(self) -> float:
        return self.config.sigma

    def __call__(self, features: torch.Tensor, *, images=None, account: str = "anonymous") -> torch.Tensor:
        noise = torch.randn(features.shape, generator=self.generator, dtype=torch.float32)
        return features + self.sigma * noise.to(features.device, features.dtype)
