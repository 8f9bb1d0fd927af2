"""The blocks of an experiment config (`config.py` puts them together): a victim, an attack, the
surrogate, a downstream set, the probe, an HTTP target, a sweep. Unknown keys fail loudly
(pydantic extra=forbid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stealkit.pretrain.config import DataSpec, PretrainConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VictimSpec(Strict):
    """An existing checkpoint, or how to pre-train one (cached by its settings)."""

    label: str | None = None
    checkpoint: str | None = None
    pretrain: PretrainConfig | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.checkpoint is None) == (self.pretrain is None):
            raise ValueError("victim needs exactly one of 'checkpoint' or 'pretrain'")
        return self

    def display(self) -> str:
        if self.label:
            return self.label
        if self.checkpoint:
            return Path(self.checkpoint).stem
        p = self.pretrain
        return f"{p.data.name}-{p.method}-{p.arch}"


class AttackSpec(Strict):
    name: str = "stolenencoder"
    label: str | None = None
    config: dict[str, Any] = {}


class SurrogateSpec(DataSpec):
    fraction_of_victim: float | None = None  # size = fraction × the victim's pre-training set (paper: 0.05)


class DownstreamSpec(Strict):
    name: str
    train_split: str = "train"
    test_split: str = "test"
    train_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    root: str | None = None


class ProbeSpec(Strict):
    kind: str = "mlp"
    config: dict[str, Any] = {}


class TargetSpec(Strict):
    """Steal over HTTP instead of in-process: the served victim's URL and an API key."""

    url: str
    api_key: str | None = None
    api_key_env: str | None = "STEALKIT_API_KEY"
    cache_dir: str | None = None
    identity: str | None = None  # what answers at the URL, for cache keys (default: the URL itself)


class SweepSpec(Strict):
    param: str  # dotted path in a row: attack.config.lam, surrogate.limit, attack.config.arch, ...
    values: list[Any]
