"""Defence: a response post-processor `defence(features, *, images, account) -> features`.

Features are float32 N×D; images the uint8 N×3×H×W that were queried; account the caller's id.
A defence may keep per-account state. Registry: DEFENCES maps a name to its class.
"""

from __future__ import annotations

import torch

from stealkit.registry import registrar

DEFENCES: dict[str, type] = {}
register_defence = registrar(DEFENCES)  # @register_defence("name") on a class registers it


class Defence:
    name = "none"

    def __call__(self, features: torch.Tensor, *, images: torch.Tensor | None = None, account: str = "anonymous") -> torch.Tensor:
        raise NotImplementedError


def build_defence(spec: dict | None):
    """{"name": "topk", "k": 10} -> TopK(k=10); None or {"name": "none"} -> None."""
    if not spec or spec.get("name", "none") == "none":
        return None
    spec = dict(spec)
    name = spec.pop("name")
    if name not in DEFENCES:
        raise ValueError(f"unknown defence {name!r}; choose one of {sorted(DEFENCES)}")
    return DEFENCES[name](**spec)
