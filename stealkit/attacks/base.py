"""Attack contract: `Attack(config).steal(target, surrogate) -> StealResult`.

Attacks see only the Target (`embed` + honest query counter), never the victim encoder.
ATTACKS maps a registry name to its class; each class has a pydantic `Config` (unknown keys fail).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, ValidationError

from stealkit.data.imageset import ImageSet
from stealkit.models.encoder import Encoder
from stealkit.registry import registrar
from stealkit.targets.base import Target
from stealkit.userinput import UserError, describe_with_fields

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
    """Base: a registered name, a strict pydantic `Config` (unknown keys and out-of-range values fail when
    the attack is built) and `steal`. Attacks that need the victim's own settings (the pre-training
    baseline) override `with_victim`."""

    name = "attack"
    Config: type[StrictModel] = StrictModel
    fixed: dict = {}  # settings a registered variant is defined by (e.g. lam=0 for w/o-aug)

    def __init__(self, config: dict | StrictModel | None = None, **overrides):
        if isinstance(config, StrictModel):
            config = config.model_dump()
        given = {**(config or {}), **overrides}
        for key, value in self.fixed.items():
            if key in given and given[key] != value:
                raise UserError(f"attack {self.name!r} is defined by {key}={value!r}; it cannot be set to {given[key]!r}")
        self.config = self.Config(**{**given, **self.fixed})

    @classmethod
    def with_victim(cls, config: dict, victim: dict, seed: int) -> dict:
        """The config as this attack needs it in an experiment: `victim` is the row's victim spec (dict),
        `seed` the experiment's. Default: the experiment's seed unless the config sets its own."""
        if "seed" in cls.Config.model_fields:
            return {"seed": seed, **config}
        return dict(config)

    def describe(self) -> str:
        """One line of the settings that matter, for reports."""
        d = getattr(self.config, "describe", None)
        return d() if callable(d) else ""

    def steal(self, target: Target, surrogate: ImageSet, *, device=None, workdir=None, progress: bool = True) -> StealResult:
        raise NotImplementedError


def attack_class(name: str) -> type[Attack]:
    if name not in ATTACKS:
        import difflib

        close = difflib.get_close_matches(name, ATTACKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown attack {name!r}{hint}; choose one of {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name]


def build_attack(name: str, config: dict | None = None) -> Attack:
    """Registry entry point; a bad setting is a UserError naming it (with "did you mean")."""
    cls = attack_class(name)
    try:
        return cls(config or {})
    except ValidationError as exc:
        raise UserError(f"attack {name!r}: {describe_with_fields(exc, cls.Config, 'config')}") from None
