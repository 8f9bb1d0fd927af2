"""Defence registry. Importing this package registers every built-in defence."""

from stealkit.defences.base import DEFENCES, Defence, build_defence, register_defence
from stealkit.defences import coverage, noise, poisoning, rounding, topk  # noqa: F401,E402  (register the defences)

__all__ = ["DEFENCES", "Defence", "build_defence", "register_defence"]
