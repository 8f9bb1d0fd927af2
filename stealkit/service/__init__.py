"""The EaaS server: `create_app(settings)` serves a victim encoder over HTTP with accounts, a
SQLite or PostgreSQL ledger, quotas, rate limits and output defences (Liu et al., "StolenEncoder", CCS 2022,
arXiv:2201.05889, Section VII). Names are imported on first use, so importing the package stays light."""

from __future__ import annotations

_EXPORTS = {
    "create_app": "stealkit.service.app", "run_server": "stealkit.service.app", "load_builtin_defences": "stealkit.service.app",
    "ServiceSettings": "stealkit.service.settings", "Ledger": "stealkit.service.ledger", "QuotaExceeded": "stealkit.service.ledger",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stealkit.service' has no attribute {name!r}")
