"""Typed rows of an experiment: what one attack run is (`Row`) and what it gave (`RowResult`).

A config expands into rows = victims × defences × attacks × sweep values × seeds (`ExperimentConfig.rows`).
`RowResult.to_json()` is the row's entry in results.json (the stolen encoder itself stays out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stealkit.experiment.victims import spec_key


@dataclass
class Row:
    victim: dict
    attack: dict  # {"name", "label", "config"}
    surrogate: dict
    defence: dict | None
    sweep: dict | None  # {"param", "value"}
    seed: int = 0

    @property
    def victim_key(self) -> str:
        return spec_key(self.victim)

    @property
    def defence_key(self) -> str:
        return spec_key(self.defence)

    def as_dict(self) -> dict:
        return {"victim": self.victim, "attack": self.attack, "surrogate": self.surrogate, "defence": self.defence,
                "sweep": self.sweep, "seed": self.seed}

    def label(self, with_seed: bool = False) -> str:
        label = self.attack.get("label") or self.attack["name"]
        if self.defence:
            d = dict(self.defence)
            label += " vs " + d.pop("name") + "(" + ",".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, (dict, list))) + ")"
        if self.sweep:
            label += f" [{self.sweep['param'].split('.')[-1]}={self.sweep['value']}]"
        if with_seed:
            label += f" (seed {self.seed})"
        return label


@dataclass
class RowResult:
    row: Row
    key: str
    label: str
    victim: str  # the victim's display name
    queries: int
    cost: float
    surrogate: str
    surrogate_size: int
    query_seconds: float = 0.0
    train_seconds: float = 0.0
    queries_from_cache: int = 0
    settings: str = ""
    log: list = field(default_factory=list)
    encoder: Any = None  # the stolen encoder (in memory only)
    downstream: dict = field(default_factory=dict)
    verification: dict | None = None

    @property
    def victim_key(self) -> str:
        return self.row.victim_key

    def steal_record(self) -> dict:
        """What steal.json keeps of a finished steal (reloaded on a rerun)."""
        return {"key": self.key, "label": self.label, "queries": self.queries, "cost": self.cost, "surrogate": self.surrogate,
                "surrogate_size": self.surrogate_size, "query_seconds": self.query_seconds, "train_seconds": self.train_seconds,
                "queries_from_cache": self.queries_from_cache, "settings": self.settings, "log": self.log}

    def to_json(self) -> dict:
        out = {k: v for k, v in self.steal_record().items() if k != "log"}
        out.update(victim_key=self.victim_key, victim=self.victim, attack=self.row.attack["name"], sweep=self.row.sweep,
                   defence=self.row.defence, seed=self.row.seed, downstream=self.downstream)
        if self.verification is not None:
            out["verification"] = self.verification
        return out
