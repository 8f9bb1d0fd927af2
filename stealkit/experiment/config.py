"""Experiment config: one YAML file describes victim(s), defence, attack(s), surrogate, budget,
downstream sets, probe and an optional sweep. Unknown keys fail loudly (pydantic extra=forbid).

A config expands into rows = victims × attacks × sweep values; every row is evaluated on every
downstream set. The blocks of a config (victim, attack, surrogate, ...) are in `specs.py`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from stealkit.experiment.specs import AttackSpec, DownstreamSpec, ProbeSpec, Strict, SurrogateSpec, SweepSpec, TargetSpec, VictimSpec


class ExperimentConfig(Strict):
    name: str = "experiment"
    description: str = ""
    seed: int = 0
    seeds: list[int] | None = None  # repeat every row with each seed (attack and probe randomness); reports mean ± std
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
    budget: int | None = Field(None, ge=0)
    normalize_answers: bool = False  # the API L2-normalises its answers before any defence (the StolenEncoder authors' API does)
    price_per_1000: float = Field(1.2, ge=0)  # Clarifai's price in the paper, $ per 1,000 queries
    downstream: list[DownstreamSpec] = [DownstreamSpec(name="gtsrb")]
    probe: ProbeSpec = ProbeSpec()
    fidelity_limit: int = Field(1000, ge=1)  # held-out downstream test images used for cosine fidelity
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
        if self.seeds is not None and not self.seeds:
            raise ValueError("seeds: give at least one seed, or leave it out")
        return self

    def defence_list(self) -> list[dict | None]:
        return self.defences if self.defences is not None else [self.defence]

    def victim_list(self) -> list[VictimSpec]:
        return self.victims or [self.victim]

    def attack_list(self) -> list[AttackSpec]:
        return self.attacks or [self.attack or AttackSpec()]

    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds else [self.seed]

    def rows(self) -> list["Row"]:
        """Expand into rows: victims × defences × attacks × sweep values × seeds."""
        from stealkit.experiment.rows import Row

        out = []
        for v in self.victim_list():
            for d in self.defence_list():
                for a in self.attack_list():
                    for value in self.sweep.values if self.sweep else [None]:
                        for seed in self.seed_list():
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
                            out.append(Row(**row, seed=seed))
        return out


def set_dotted(d: dict, path: str, value: Any) -> None:
    """set_dotted(cfg, "attacks.0.config.epochs", 5): dots walk dicts; integer parts index lists."""
    from stealkit.userinput import UserError

    keys = path.split(".")
    try:
        for k in keys[:-1]:
            if isinstance(d, list):
                d = d[int(k)]
                continue
            if not isinstance(d, dict):
                raise TypeError
            if d.get(k) is None:
                d[k] = {}
            d = d[k]
        if isinstance(d, list):
            d[int(keys[-1])] = value
        elif isinstance(d, dict):
            d[keys[-1]] = value
        else:
            raise TypeError
    except (TypeError, ValueError, IndexError):
        raise UserError(f"cannot set {path!r}: {'.'.join(keys[:-1]) or path} is not a mapping or list there") from None


def load_config(path: str | Path, overrides: list[str] | None = None, *, validate: bool = True) -> ExperimentConfig:
    """Read YAML, apply `key.sub=value` overrides (values parsed as YAML), validate the config and every
    row it expands into (attack, defence, probe and verify settings) before any work: a mistake is a
    UserError naming each problem."""
    from pydantic import ValidationError

    from stealkit.userinput import UserError, describe_with_fields, parse_assignments

    path = Path(path)
    if not path.exists():
        raise UserError(f"config {path} not found; see configs/ for examples")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config is a mapping of keys (name, victim, attack, ...), got {type(raw).__name__}")
    for key, value in parse_assignments(overrides or []):
        set_dotted(raw, key, value)
    try:
        cfg = ExperimentConfig(**raw)
    except ValidationError as exc:
        raise UserError(describe_with_fields(exc, ExperimentConfig)) from None
    if validate:
        from stealkit.experiment.validate import validate_config

        validate_config(cfg)
    return cfg
