"""Routes: POST /v1/embeddings, GET /v1/usage, GET /v1/model, GET /healthz.

POST /v1/embeddings order of work: auth (401) -> rate limit (429 + Retry-After) -> read the body
under max_request_bytes (413) -> decode and validate (413/415/422) -> reserve the queries in the
ledger (402 if over quota, nothing billed) -> encoder + defence -> commit -> respond. If the encoder
fails after the reservation, the reservation is deleted: nothing is billed for an unserved request.

Idempotency-Key header (optional, 1–255 printable ASCII characters): the answer is stored with the
ledger row; the same account sending the same key and body again gets the stored answer, billed 0,
with `Idempotent-Replayed: true` (409 while the first is still running, 422 for another body).
"""

from __future__ import annotations

import hashlib
import math

import torch
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from stealkit.service.auth import require_account
from stealkit.service.decode import BadInput, check_count, decode_base64_image, decode_image, decode_npy, decode_raw
from stealkit.service.ledger import Account, IdempotencyInFlight, IdempotencyMismatch, QuotaExceeded, Replay
from stealkit.service.schemas import EmbeddingsRequest, EmbeddingsResponse, Error, Health, ModelInfo, UsageResponse

router = APIRouter()
BINARY = "application/octet-stream"

_EMBED_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}
            },
            "application/json": {"schema": EmbeddingsRequest.model_json_schema()},
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
                BINARY: {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "with 'Accept: application/octet-stream': little-endian float32 N×D, shape in X-Embedding-Shape",
                }
            }
        }
    },
}
_ERRORS = {s: {"model": Error} for s in (401, 402, 409, 413, 415, 422, 429)}
IDEMPOTENCY_HEADER = "idempotency-key"


def _idempotency(request: Request, body: bytes) -> tuple[str | None, str | None]:
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


def _respond(request: Request, st, feats: torch.Tensor, request_id: int, billed: int, remaining: int | None, replayed: bool) -> Response:
    n = feats.shape[0]
    headers = {"X-Request-Id": str(request_id), "X-Billed": str(billed), "X-Quota-Remaining": "" if remaining is None else str(remaining)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if BINARY in request.headers.get("accept", ""):
        headers["X-Embedding-Shape"] = f"{n},{feats.shape[1]}"
        return Response(feats.numpy().astype("<f4", copy=False).tobytes(), media_type=BINARY, headers=headers)
    body = EmbeddingsResponse(model=st.model_name, dim=feats.shape[1], count=n, embeddings=feats.tolist(), billed=billed, remaining=remaining)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadInput(400, f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise BadInput(413, f"request body of {int(declared)} bytes is larger than the limit of {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BadInput(413, f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_files(request: Request, body: bytes, max_batch: int) -> list[tuple[str, bytes]]:
    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_batch + 1, max_fields=100)
    except HTTPException as exc:  # starlette reports multipart problems as 400
        if "Too many files" in str(exc.detail):
            raise BadInput(413, f"more than {max_batch} files in one request; split the batch") from None
        raise BadInput(422, f"malformed multipart body: {exc.detail}") from None
    files = []
    for i, (field, value) in enumerate(form.multi_items()):
        if isinstance(value, UploadFile):
            files.append((f"file {len(files)} ({field}: {value.filename!r})", await value.read()))
    await form.close()
    return files


async def _decode(request: Request, body: bytes) -> list[torch.Tensor]:
    s = request.app.state.service.settings
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        files = await _multipart_files(request, body, s.max_batch)
        check_count(len(files), s.max_batch)
        return await run_in_threadpool(lambda: [decode_image(data, s.max_image_side, what) for what, data in files])
    if ctype == "application/json":
        try:
            req = EmbeddingsRequest.model_validate_json(body)
        except ValidationError as exc:
            raise BadInput(422, "invalid JSON body: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        check_count(len(req.images), s.max_batch)
        return await run_in_threadpool(
            lambda: [decode_base64_image(t, s.max_image_side, f"image {i}") for i, t in enumerate(req.images)]
        )
    if ctype in (BINARY, "application/x-npy"):
        if ctype == "application/x-npy":
            batch = await run_in_threadpool(decode_npy, body, s.max_batch, s.max_image_side)
        else:
            batch = await run_in_threadpool(
                decode_raw, body, request.headers.get("x-array-shape"), request.headers.get("x-array-dtype"), s.max_batch, s.max_image_side
            )
        return list(batch)
    raise BadInput(415, f"unsupported Content-Type {ctype or '(none)'!r}; use multipart/form-data, application/json or {BINARY}")


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, openapi_extra=_EMBED_DOC, responses=_ERRORS)
async def embeddings(request: Request, account: Account = Depends(require_account)):
    """Embed a batch of images: one image = one billable query. JSON answer, or binary with Accept: application/octet-stream."""
    st = request.app.state.service
    wait = st.buckets.acquire(account.name, account.rate, account.burst)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise HTTPException(429, f"rate limit of {account.rate} requests/s exceeded; retry in {wait:.2f} s", headers={"Retry-After": str(retry)})
    body = await _read_body(request, st.settings.max_request_bytes)
    idem_key, body_sha = _idempotency(request, body)
    images = await _decode(request, body)
    n = len(images)
    price = n * st.settings.price_per_1000 / 1000.0
    try:
        reserved = await run_in_threadpool(st.ledger.reserve, account.name, n, price, idem_key, body_sha)
    except QuotaExceeded as exc:
        raise HTTPException(402, str(exc)) from None
    except IdempotencyInFlight as exc:
        raise HTTPException(409, str(exc), headers={"Retry-After": "1"}) from None
    except IdempotencyMismatch as exc:
        raise HTTPException(422, str(exc)) from None
    if isinstance(reserved, Replay):
        usage = await run_in_threadpool(st.ledger.usage, account.name)
        return _respond(request, st, torch.from_numpy(reserved.answer), reserved.request_id, 0, usage.remaining, replayed=True)
    request_id = reserved
    try:
        feats = await run_in_threadpool(st.answer, images, account.name)
        await run_in_threadpool(st.ledger.commit, request_id, feats.numpy() if idem_key is not None else None)
    except BaseException:
        st.ledger.cancel(request_id)  # sync on purpose: must run even if this task is being cancelled
        raise
    usage = await run_in_threadpool(st.ledger.usage, account.name)
    return _respond(request, st, feats, request_id, n, usage.remaining, replayed=False)


@router.get("/v1/usage", response_model=UsageResponse, responses={401: {"model": Error}})
def usage(request: Request, account: Account = Depends(require_account)):
    """The caller's queries, requests, quota, remaining queries and cost so far."""
    st = request.app.state.service
    u = st.ledger.usage(account.name)
    return UsageResponse(
        account=account.name, queries=u.queries, requests=u.requests, quota=u.quota, remaining=u.remaining,
        cost=round(u.cost, 6), price_per_1000=st.settings.price_per_1000,
    )


@router.get("/v1/model", response_model=ModelInfo, responses={401: {"model": Error}})
def model_info(request: Request, account: Account = Depends(require_account)):
    """What is served (architecture, input size, feature dimension, defence, price, limits); not billed."""
    st = request.app.state.service
    s = st.settings
    return ModelInfo(
        model=st.model_name, arch=st.encoder.spec.arch, input_size=st.encoder.spec.input_size, feature_dim=st.encoder.feature_dim,
        defence=getattr(st.defence, "name", "none") if st.defence is not None else "none", price_per_1000=s.price_per_1000,
        max_batch=s.max_batch, max_image_side=s.max_image_side, max_request_bytes=s.max_request_bytes,
    )


@router.get("/healthz", response_model=Health)
def healthz(request: Request):
    return Health(status="ok", model_loaded=getattr(request.app.state, "service", None) is not None)
