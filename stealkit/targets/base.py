"""Target: the black box an attacker sees — `embed(images) -> features` with an honest query counter.

One image is one query. A budget, when set, is never exceeded: a call that would go past it is
refused whole (BudgetExceeded) before anything is sent or counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class BudgetExceeded(RuntimeError):
    """Raised when a query would take the target past its budget; nothing was queried."""


class Target(ABC):
    """images uint8 N×3×H×W -> float32 features N×D (CPU tensor)."""

    def __init__(self, budget: int | None = None):
        if budget is not None and budget < 0:
            raise ValueError(f"budget must be >= 0 or None, got {budget}")
        self.budget = budget
        self.queries = 0  # images answered so far (billable queries)

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images N×3×H×W, got shape {tuple(images.shape)}")
        n = len(images)
        if n == 0:
            return torch.zeros(0, self.feature_dim)
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExceeded(
                f"query of {n} images refused: {self.queries} of the budget of {self.budget} already spent "
                f"({self.budget - self.queries} left); raise the budget or query fewer images"
            )
        out = self._embed(images)
        self.queries += self._billed(n)
        return out

    def _billed(self, n: int) -> int:
        """How many of n answered images were billed (a cached remote answer is not billed again)."""
        return n

    @property
    @abstractmethod
    def feature_dim(self) -> int: ...

    @abstractmethod
    def _embed(self, images: torch.Tensor) -> torch.Tensor: ...
