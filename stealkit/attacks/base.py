"""Attack contract: `Attack(config).steal(target, surrogate) -> StealResult`.

Attacks see only the Target (`embed` + honest query counter), never the victim encoder.
ATTACKS maps a registry name to its class; each class has a pydantic `Config` (unknown keys fail).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm

from stealkit.data.imageset import ImageSet
from stealkit.models.encoder import Encoder
from stealkit.registry import registrar
from stealkit.targets.base import Target

ATTACKS: dict[str, type["Attack"]] = {}
register_attack = registrar(ATTACKS)  # @register_attack("name") on a class registers it


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class StealResult:
    """encoder: the stolen encoder; queries: images billed by the target during this attack;
    log: per-epoch metrics; seconds: wall time of querying and of training."""

    encoder: Encoder
    queries: int
    log: list[dict] = field(default_factory=list)
    query_seconds: float = 0.0
    train_seconds: float = 0.0
    info: dict = field(default_factory=dict)


class Attack:
    name = "attack"
    Config: type[StrictModel] = StrictModel

    def __init__(self, config: dict | StrictModel | None = None, **overrides):
        if isinstance(config, StrictModel):
            config = config.model_dump()
        self.config = self.Config(**{**(config or {}), **overrides})

    def steal(self, target: Target, surrogate: ImageSet, *, device=None, workdir=None, progress: bool = True) -> StealResult:
        raise NotImplementedError


def build_attack(name: str, config: dict | None = None) -> Attack:
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
    return ATTACKS[name](config or {})


def query_target(target: Target, images: torch.Tensor, batch_size: int = 256, progress: bool = False, desc: str = "querying") -> torch.Tensor:
    """Ask the target once per image, batch by batch -> float32 N×D. Each image costs one query."""
    out = []
    bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        out.append(target.embed(chunk).float())
        bar.update(len(chunk))
    bar.close()
    return torch.cat(out) if out else torch.zeros(0, target.feature_dim)
