"""Authentication dependency: `Authorization: Bearer <key>` or `X-API-Key: <key>` -> Account, else 401.

A missing, malformed, unknown or revoked key is refused before anything is read or recorded. Both
schemes are declared in the OpenAPI spec (so /docs has an Authorize button).
"""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from stealkit.service.ledger import Account

bearer = HTTPBearer(auto_error=False, scheme_name="BearerKey", description="Authorization: Bearer <API key> (keys from `stealkit keys create`)")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader", description="the API key in an X-API-Key header")


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def require_account(
    request: Request,
    _bearer: HTTPAuthorizationCredentials | None = Depends(bearer),
    _header: str | None = Depends(api_key_header),
) -> Account:
    """FastAPI dependency (sync: runs in the thread pool, as the ledger lookup blocks)."""
    key = presented_key(request)
    account = request.app.state.service.ledger.authenticate(key) if key else None
    if account is None:
        reason = "missing API key" if key is None else "invalid or revoked API key"
        raise HTTPException(401, f"{reason}; send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
    request.state.account = account.name
    return account
