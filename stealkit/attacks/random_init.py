"""Random-init baseline: a randomly initialised encoder of the stolen architecture, zero queries.

Not in the paper's tables, but the floor every attack must clear: on easy downstream sets a
random convolutional encoder already gives a usable probe accuracy, and an honest report shows it.
"""

from __future__ import annotations

from stealkit.attacks.base import Attack, StealResult, StrictModel, register_attack
from stealkit.models.encoder import build_encoder
from stealkit.runtime import seed_everything


class RandomInitConfig(StrictModel):
    arch: str = "resnet34"
    seed: int = 0
    match_target_dim: bool = False  # add a random linear head to the target's feature dimension (asks nothing)


@register_attack("random-init")
class RandomInit(Attack):
    """Random-init baseline: a randomly initialised encoder of the stolen architecture; zero queries."""

    Config = RandomInitConfig

    def steal(self, target, surrogate, *, device=None, workdir=None, progress=True) -> StealResult:
        seed_everything(self.config.seed)
        out_dim = target.feature_dim if self.config.match_target_dim else None
        encoder = build_encoder(self.config.arch, input_size=surrogate.size, out_dim=out_dim).eval()
        return StealResult(encoder=encoder, queries=0, info={"surrogate": surrogate.name, "surrogate_size": len(surrogate), "config": self.config.model_dump()})
