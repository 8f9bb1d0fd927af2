"""POST /v1/embeddings (the other routes are in info_routes.py).

Order of work: auth (401) -> rate limit, shared by all workers (429 + Retry-After) -> read the body
under max_request_bytes and body_timeout_s (413 / 408) -> decode and validate: counts, sides and the
decoded-pixel budget before any pixel is decoded (413/415/422) -> reserve the queries in the ledger
(402 if over quota, nothing billed) -> encoder (batched across requests) + this account's defence ->
commit -> respond. If answering fails after the reservation, the reservation is deleted: nothing is
billed for an unserved request (500, the connection stays usable); if the reservation was cleared
meanwhile (this process stalled past its lease), the answer is withheld (503, nothing billed).

Idempotency-Key header (optional, 1–255 printable ASCII characters): the answer is stored with the
ledger row; the same account sending the same key and body again gets the stored answer, billed 0,
with `Idempotent-Replayed: true` (409 while the first is still running, 422 for another body).
"""

from __future__ import annotations

import hashlib
import logging
import math

import torch
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from stealkit.service.auth import require_account
from stealkit.service.body import read_body
from stealkit.service.decode import BadInput, Limits, count_of
from stealkit.service.inputs import decode_request
from stealkit.service.ledger import Account, IdempotencyInFlight, IdempotencyMismatch, QuotaExceeded, Replay, ReservationLost
from stealkit.service.ratelimit import take_token
from stealkit.service.respond import BINARY, respond
from stealkit.service.schemas import EmbeddingsRequest, EmbeddingsResponse, Error, OpenAIEmbeddingsRequest, OpenAIEmbeddingsResponse

router = APIRouter()
log = logging.getLogger("stealkit.service")
IDEMPOTENCY_HEADER = "idempotency-key"

_EMBED_DOC = {
    "parameters": [
        {"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": ["stealkit", "openai"]},
         "description": "answer form for JSON answers (a request in the common embedding-API form is answered in it)"},
        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255},
         "description": "a retry with the same key and body gets the stored answer, billed 0"},
        {"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 128},
         "description": "kept and echoed (letters, digits, ._:-); a random id otherwise"},
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}
            },
            "application/json": {"schema": {"oneOf": [EmbeddingsRequest.model_json_schema(), OpenAIEmbeddingsRequest.model_json_schema()]}},
            BINARY: {
                "schema": {"type": "string", "format": "binary"},
                "description": "raw uint8 C-order pixels with header X-Array-Shape: N,3,H,W (or an .npy body)",
            },
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {
            "content": {
                "application/json": {"schema": {"oneOf": [EmbeddingsResponse.model_json_schema(), OpenAIEmbeddingsResponse.model_json_schema()]}},
                BINARY: {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "with 'Accept: application/octet-stream': little-endian float32 N×D, shape in X-Embedding-Shape",
                },
            }
        }
    },
}
_ERRORS = {s: {"model": Error} for s in (401, 402, 408, 409, 413, 415, 422, 429, 500, 503)}


def _idempotency(request: Request, body: bytearray) -> tuple[str | None, str | None]:
    """(key, SHA-256 of what the request asks and of what answers it: the served model and defence)
    from the Idempotency-Key header; (None, None) without one."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None, None
    if not 1 <= len(key) <= 255 or not all(33 <= ord(c) <= 126 for c in key):
        raise BadInput(422, "Idempotency-Key must be 1–255 printable ASCII characters without spaces")
    h = hashlib.sha256(request.app.state.service.identity.encode() + b"\0")
    for name in ("content-type", "x-array-shape", "x-array-dtype"):
        h.update(request.headers.get(name, "").encode() + b"\0")
    h.update(body)
    return key, h.hexdigest()


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, openapi_extra=_EMBED_DOC, responses=_ERRORS)
async def embeddings(request: Request, account: Account = Depends(require_account)):
    """Embed a batch of images: one image = one billable query. JSON answer, or binary with Accept: application/octet-stream."""
    st = request.app.state.service
    s = st.settings
    wait = await run_in_threadpool(take_token, st.ledger, account.name, account.rate, account.burst) if account.rate else 0.0
    if wait > 0:
        raise HTTPException(429, f"rate limit of {account.rate:g} requests/s exceeded; retry in {wait:.2f} s",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
    body = await read_body(request, s.max_request_bytes, s.body_timeout_s)
    idem_key, body_sha = _idempotency(request, body)
    groups, form, encoding = await decode_request(request, body, Limits(s.max_batch, s.max_image_side, s.max_request_pixels), st.feature_dim)
    n = count_of(groups)
    request.state.images = n
    incoming, own_id = request.state.request_id_incoming, request.state.request_id
    try:
        reserved = await run_in_threadpool(st.ledger.reserve, account.name, n, n * s.price_per_1000 / 1000.0, idem_key, body_sha, own_id)
    except QuotaExceeded as exc:
        raise HTTPException(402, str(exc)) from None
    except IdempotencyInFlight as exc:
        raise HTTPException(409, str(exc), headers={"Retry-After": "1"}) from None
    except IdempotencyMismatch as exc:
        raise HTTPException(422, str(exc)) from None
    answer = dict(model=st.model_name, form=form, encoding=encoding, accept=request.headers.get("accept", ""))
    if isinstance(reserved, Replay):
        usage = await run_in_threadpool(st.ledger.usage, account.name)
        rid = incoming or reserved.public_id or own_id
        request.state.billed, request.state.response_request_id = 0, rid
        if st.metrics is not None:
            st.metrics.replayed.inc(n)
        return respond(torch.from_numpy(reserved.answer), request_id=rid, billed=0, remaining=usage.remaining, replayed=True, **answer)
    try:
        feats = await st.embed(groups, account.name)
        await run_in_threadpool(st.ledger.commit, reserved, feats.numpy() if idem_key is not None else None)
    except ReservationLost:
        log.error("request %s: its reservation was cleared before it was answered (this process stalled past its lease)", own_id)
        return JSONResponse({"detail": "the server lost this request's reservation before answering it; nothing was billed, retry"},
                            status_code=503, headers={"Retry-After": "1"})
    except Exception:
        log.exception("request %s failed while answering; its reservation is cancelled", own_id)
        st.ledger.cancel(reserved)  # if the ledger is down too: 503, and the lease thread deletes it later
        return JSONResponse({"detail": f"internal error while answering request {own_id}; nothing was billed"}, status_code=500)
    except BaseException:
        st.ledger.cancel(reserved)  # sync on purpose: must run even if this task is being cancelled
        raise
    usage = await run_in_threadpool(st.ledger.usage, account.name)
    request.state.billed = n
    if st.metrics is not None:
        st.metrics.images.inc(n)
    return respond(feats, request_id=own_id, billed=n, remaining=usage.remaining, replayed=False, **answer)
