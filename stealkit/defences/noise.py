"""Gaussian output noise: features + N(0, sigma²) per entry (a baseline output perturbation).

features N×D -> N×D. `seed` makes the draws reproducible (one generator for the defence).
"""

from __future__ import annotations

import torch

from stealkit.defences.base import Defence, register_defence


@register_defence("noise")
class GaussianNoise(Defence):
    def __init__(self, sigma: float, seed: int | None = None):
        if float(sigma) < 0:
            raise ValueError(f"noise needs sigma >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    def __call__(self, features: torch.Tensor, *, images=None, account: str = "anonymous") -> torch.Tensor:
        noise = torch.randn(features.shape, generator=self.generator, dtype=torch.float32)
        return features + self.sigma * noise.to(features.device, features.dtype)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"
