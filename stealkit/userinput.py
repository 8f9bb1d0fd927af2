"""A user's settings on the command line and in config files: KEY=VALUE parsing and one-line messages
for validation errors (a user's mistake gets one or two lines, never a traceback)."""

from __future__ import annotations

import difflib
from typing import Any, Iterable

import yaml
from pydantic import ValidationError


class UserError(ValueError):
    """A mistake in what the user asked for (a config, a flag, a file): the message says what and what to do."""


def parse_assignment(item: str, flag: str = "--set", example: str = "attack.config.epochs=10") -> tuple[str, Any]:
    """'a.b=3' -> ('a.b', 3): the value is read as YAML (numbers, booleans, lists, null)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{flag} {item!r}: use KEY=VALUE, e.g. {flag} {example}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise UserError(f"{flag} {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None


def parse_assignments(items: Iterable[str], flag: str = "--set", example: str = "attack.config.epochs=10") -> list[tuple[str, Any]]:
    return [parse_assignment(i, flag, example) for i in items]


def describe(exc: ValidationError, where: str = "") -> str:
    """A pydantic error -> '<where>.<field>: <message>' lines, with the allowed keys for an unknown one."""
    lines = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        path = ".".join(p for p in (where, loc) if p)
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown setting")
        elif e["type"] == "missing":
            lines.append(f"{path}: required")
        else:
            msg = e["msg"].removeprefix("Value error, ")  # a validator's own sentence: no pydantic prefix
            got = f" (got {e['input']!r})" if _short(e.get("input")) else ""
            lines.append(f"{path}: {msg}{got}" if path else msg)
    return "; ".join(lines)


def describe_with_fields(exc: ValidationError, model: type, where: str = "") -> str:
    """As `describe`, adding "did you mean" and the known fields of `model` for unknown top-level keys."""
    msg = describe(exc, where)
    unknown = [e["loc"][0] for e in exc.errors() if e["type"] == "extra_forbidden" and len(e["loc"]) == 1]
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), list(model.model_fields), n=1)
        if close:
            hints.append(f"did you mean {close[0]!r} for {key!r}?")
    if unknown:
        hints.append(f"known: {', '.join(model.model_fields)}")
    return msg + ("; " + " ".join(hints) if hints else "")


def _short(value) -> bool:
    return isinstance(value, (int, float, str, bool)) and len(repr(value)) <= 40
