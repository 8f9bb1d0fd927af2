"""API keys: `sk_<key_id>_<secret>`; only SHA-256(key) is stored, compared in constant time.

key_id (16 hex chars, public) selects the account row, so the lookup never depends on the secret;
the secret part is `secrets.token_urlsafe(32)` (256 bits).
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "sk_"


def new_key() -> tuple[str, str]:
    """-> (key_id, full key). Show the full key to its owner once; store only `hash_key(key)`."""
    key_id = secrets.token_hex(8)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public key_id of a well-formed key, else None."""
    if not key.startswith(PREFIX):
        return None
    key_id, sep, secret = key[len(PREFIX) :].partition("_")
    if not sep or not secret or len(key_id) != 16 or any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id


def key_matches(key: str, stored_hash: str) -> bool:
    """Constant-time comparison of SHA-256(key) with the stored hash."""
    return secrets.compare_digest(hash_key(key).encode(), stored_hash.encode())
