"""Defence: a response post-processor `defence(features, *, images, account) -> features`.

Features are float32 N×D; images the uint8 N×3×H×W that were queried; account the caller's id.
A defence may keep per-account state. Every defence declares a strict pydantic `Config` (unknown keys
and out-of-range values fail when it is built); its settings are `self.config`, and its identity (what
the server's replays and the experiment's caches key on) is `identity()`, the config as JSON.
Registry: DEFENCES maps a name to its class; `build_defence({"name": ..., **settings})` builds one.
"""

from __future__ import annotations

import difflib

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from stealkit.registry import registrar
from stealkit.userinput import UserError, describe_with_fields

DEFENCES: dict[str, type] = {}
register_defence = registrar(DEFENCES)  # @register_defence("name") on a class registers it


class DefenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Defence:
    """Subclasses set `Config` and implement `__call__`; `setup()` builds what the settings imply.
    Settings may be given positionally, in the order of Config's fields: TopK(5) == TopK(k=5)."""

    name = "none"
    Config: type[DefenceConfig] = DefenceConfig

    def __init__(self, *args, **kwargs):
        fields = list(self.Config.model_fields)
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes at most {len(fields)} positional settings ({', '.join(fields)})")
        given = dict(zip(fields, args))
        twice = set(given) & set(kwargs)
        if twice:
            raise TypeError(f"{type(self).__name__}: {sorted(twice)} given twice")
        self.config = self.Config(**given, **kwargs)
        self.setup()

    def setup(self) -> None:
        """Derived state from self.config (generators, loaded models)."""

    def identity(self) -> dict:
        """The defence's settings as JSON-able values (for replay identity and cache keys)."""
        return {"name": self.name, **self.config.model_dump(mode="json")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump(mode="json").items())
        return f"{type(self).__name__}({args})"

    def __call__(self, features: torch.Tensor, *, images: torch.Tensor | None = None, account: str = "anonymous") -> torch.Tensor:
        raise NotImplementedError


def defence_class(name: str) -> type[Defence]:
    if name not in DEFENCES:
        close = difflib.get_close_matches(name, DEFENCES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown defence {name!r}{hint}; choose one of {', '.join(sorted(DEFENCES))} or none")
    return DEFENCES[name]


def validate_defence(spec: dict | None) -> dict | None:
    """Check a defence spec against its Config without building it (nothing is loaded or trained) ->
    the spec with its name; ValueError in one line per problem otherwise."""
    if not spec or spec.get("name", "none") == "none":
        return None
    spec = dict(spec)
    cls = defence_class(spec.get("name"))
    settings = {k: v for k, v in spec.items() if k != "name"}
    try:
        cls.Config(**settings)
    except ValidationError as exc:
        raise UserError(f"defence {cls.name!r}: {describe_with_fields(exc, cls.Config)}") from None
    return spec




def build_defence(spec: dict | None):
    """{"name": "topk", "k": 10} -> TopK(k=10); None or {"name": "none"} -> None."""
    if not spec or spec.get("name", "none") == "none":
        return None
    spec = dict(spec)
    cls = defence_class(spec.pop("name"))
    try:
        cls.Config(**spec)  # every defence's settings checked by its Config first, whatever its constructor
        return cls(**spec)
    except ValidationError as exc:
        raise UserError(f"defence {cls.name!r}: {describe_with_fields(exc, cls.Config)}") from None
