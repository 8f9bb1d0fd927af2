"""Authentication dependency: `Authorization: Bearer <key>` or `X-API-Key: <key>` -> Account, else 401.

A missing, malformed, unknown or revoked key is refused before anything is read or recorded.
"""

from __future__ import annotations

from fastapi import HTTPException, Request

from stealkit.service.ledger import Account


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def require_account(request: Request) -> Account:
    """FastAPI dependency (sync: runs in the thread pool, as the SQLite lookup blocks)."""
    key = presented_key(request)
    account = request.app.state.service.ledger.authenticate(key) if key else None
    if account is None:
        reason = "missing API key" if key is None else "invalid or revoked API key"
        raise HTTPException(401, f"{reason}; send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
    return account
