"""StealLoss: one stealing objective with its own hyper-parameters, comparing the stolen encoder's
features with the target's answers.

A loss is called as `loss(stolen, target)` with dicts of N×D batches keyed by view: "clean" (f(x)),
"aug" (f(A(x)), the same augmented image for both encoders) and "aug2" (f_s(A'(x)), a second draw of the
same augmenter, independent of A(x); the stolen encoder's only: the ICML'22 blog's "we query the victim
encoder with the first augmentation and our stolen copy with the second"). It says which views it needs
(`stolen_views`, `target_views`); the trainer computes only those and asks the target for f_t(A(x))
only when "aug" is in `target_views` (a query per image per epoch). Returns (L, L1, L2): the loss and
two parts that are logged (L2 = 0 for one-term losses).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from stealkit.registry import registrar

STEAL_LOSSES: dict[str, type["StealLoss"]] = {}
register_loss = registrar(STEAL_LOSSES)  # @register_loss("name") on a class registers it

VIEWS = ("clean", "aug", "aug2")


class LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StealLoss:
    """Base of the stealing losses. Subclasses set `Config` and implement `__call__`."""

    name = "loss"
    Config: type[LossConfig] = LossConfig

    def __init__(self, config: dict | LossConfig | None = None, **overrides):
        if isinstance(config, LossConfig):
            config = config.model_dump()
        self.config = self.Config(**{**(config or {}), **overrides})

    @property
    def stolen_views(self) -> frozenset[str]:
        return frozenset({"clean"})

    @property
    def target_views(self) -> frozenset[str]:
        return frozenset({"clean"})

    def __call__(self, stolen: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class PairLoss(StealLoss):
    """A loss ℓ(f_s(view), f_t(view')) of one stolen and one target view: `stolen_view`, `target_view`."""

    def __init__(self, config=None, *, stolen_view: str = "clean", target_view: str = "clean", **overrides):
        super().__init__(config, **overrides)
        for v in (stolen_view, target_view):
            if v not in VIEWS:
                raise ValueError(f"view {v!r}: choose one of {VIEWS}")
        self.stolen_view, self.target_view = stolen_view, target_view

    @property
    def stolen_views(self) -> frozenset[str]:
        return frozenset({self.stolen_view})

    @property
    def target_views(self) -> frozenset[str]:
        return frozenset({self.target_view})

    def pair(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, stolen, target):
        loss = self.pair(stolen[self.stolen_view], target[self.target_view])
        return loss, loss.detach(), torch.zeros((), device=loss.device)


def build_loss(name: str, config: dict | None = None, **views) -> StealLoss:
    """Registry entry point: build_loss("infonce", {"temperature": 0.5}, stolen_view="aug", target_view="aug")."""
    if name not in STEAL_LOSSES:
        raise ValueError(f"unknown stealing loss {name!r}; choose one of {sorted(STEAL_LOSSES)}")
    return STEAL_LOSSES[name](config, **views)


def check_pair(stolen: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both N×D -> (stolen float, target float detached)."""
    if stolen.ndim != 2 or stolen.shape != target.shape:
        raise ValueError(f"stolen and target must both be N×D, got {tuple(stolen.shape)} and {tuple(target.shape)}")
    return stolen.float(), target.float().detach()
