"""Experiment config: one YAML file describes victim(s), defence, attack(s), surrogate, budget,
downstream sets, probe and an optional sweep. Unknown keys fail loudly (pydantic extra=forbid).

A config expands into rows = victims × attacks × sweep values; every row is evaluated on every
downstream set.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

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
    train_limit: int | None = None
    test_limit: int | None = None
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


class ExperimentConfig(Strict):
    name: str = "experiment"
    description: str = ""
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None
    output_dir: str = "runs"
    victim: VictimSpec | None = None
    victims: list[VictimSpec] | None = None
    defence: dict[str, Any] | None = None
    defences: list[dict[str, Any] | None] | None = None  # compare several defences (None / {name: none} = undefended)
    attack: AttackSpec | None = None
    attacks: list[AttackSpec] | None = None
    surrogate: SurrogateSpec = SurrogateSpec(name="tiny_imagenet32", fraction_of_victim=0.05)
    budget: int | None = None
    normalize_answers: bool = False  # the API L2-normalises its answers before any defence (the StolenEncoder authors' API does)
    price_per_1000: float = 1.2  # Clarifai's price in the paper, $ per 1,000 queries
    downstream: list[DownstreamSpec] = [DownstreamSpec(name="gtsrb")]
    probe: ProbeSpec = ProbeSpec()
    fidelity_limit: int = 1000  # held-out downstream test images used for cosine fidelity
    target: TargetSpec | None = None
    sweep: SweepSpec | None = None
    verify: dict[str, Any] | None = None  # ownership checks on every stolen encoder (see experiment/verification.py)
    progress: bool = True

    @model_validator(mode="after")
    def _lists(self):
        if (self.victim is None) == (self.victims is None):
            raise ValueError("give exactly one of 'victim' or 'victims'")
        if self.attack is not None and self.attacks is not None:
            raise ValueError("give 'attack' or 'attacks', not both")
        if self.defence is not None and self.defences is not None:
            raise ValueError("give 'defence' or 'defences', not both")
        return self

    def defence_list(self) -> list[dict | None]:
        return self.defences if self.defences is not None else [self.defence]

    def victim_list(self) -> list[VictimSpec]:
        return self.victims or [self.victim]

    def attack_list(self) -> list[AttackSpec]:
        return self.attacks or [self.attack or AttackSpec()]

    def rows(self) -> list[dict]:
        """Expand into rows: {"victim", "attack", "surrogate", "defence", "sweep"} plain dicts,
        victims × defences × attacks × sweep values."""
        out = []
        for v in self.victim_list():
            for d in self.defence_list():
                for a in self.attack_list():
                    for value in self.sweep.values if self.sweep else [None]:
                        row = {
                            "victim": v.model_dump(),
                            "attack": a.model_dump(),
                            "surrogate": self.surrogate.model_dump(),
                            "defence": copy.deepcopy(d) if d and d.get("name", "none") != "none" else None,
                            "sweep": None,
                        }
                        if self.sweep:
                            set_dotted(row, self.sweep.param, value)
                            row["sweep"] = {"param": self.sweep.param, "value": value}
                        out.append(row)
        return out


def set_dotted(d: dict, path: str, value: Any) -> None:
    """set_dotted(cfg, "attacks.0.config.epochs", 5): dots walk dicts; integer parts index lists."""
    keys = path.split(".")
    for k in keys[:-1]:
        if isinstance(d, list):
            d = d[int(k)]
            continue
        if d.get(k) is None:
            d[k] = {}
        d = d[k]
    if isinstance(d, list):
        d[int(keys[-1])] = value
    else:
        d[keys[-1]] = value


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read YAML, apply `key.sub=value` overrides (values parsed as YAML), validate."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config {path} not found; see configs/ for examples")
    raw = yaml.safe_load(path.read_text()) or {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        set_dotted(raw, key, yaml.safe_load(value))
    return ExperimentConfig(**raw)
