"""Name -> class registries (attacks, defences): one decorator factory for all of them."""

from __future__ import annotations

from typing import Callable


def registrar(registry: dict[str, type]) -> Callable[[str], Callable[[type], type]]:
    """-> `register(name)`, a class decorator that sets `cls.name = name` and files the class in `registry`."""

    def register(name: str):
        def wrap(cls):
            cls.name = name
            registry[name] = cls
            return cls

        return wrap

    return register
