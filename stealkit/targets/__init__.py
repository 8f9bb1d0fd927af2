from stealkit.targets.base import BudgetExceeded, Target
from stealkit.targets.local import LocalTarget

__all__ = ["Target", "LocalTarget", "BudgetExceeded"]
