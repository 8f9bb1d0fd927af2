"""The EaaS server: `create_app(settings)` serves a victim encoder over HTTP with accounts, a
SQLite ledger, quotas, rate limits and output defences (issue 4; StolenEncoder, 004, Section VII)."""

from stealkit.service.app import create_app, load_builtin_defences, run_server
from stealkit.service.ledger import Ledger, QuotaExceeded
from stealkit.service.settings import ServiceSettings

__all__ = ["create_app", "run_server", "ServiceSettings", "Ledger", "QuotaExceeded", "load_builtin_defences"]
