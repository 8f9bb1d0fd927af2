"""The three answer forms of POST /v1/embeddings.

- binary (`Accept: application/octet-stream`): little-endian float32 N×D, shape in X-Embedding-Shape;
- stealkit JSON (default): {"model", "dim", "count", "embeddings": [[...]], "billed", "remaining"};
- the common embedding-API JSON form (a request in that form, or `?format=openai`):
  {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}], "model", "usage"},
  embeddings as base64 of little-endian float32 with "encoding_format": "base64".
Headers on every answer: X-Request-Id, X-Billed, X-Quota-Remaining (and Idempotent-Replayed: true).
"""

from __future__ import annotations

import base64
import json

import torch
from fastapi import Response

from stealkit.service.schemas import EmbeddingsResponse

BINARY = "application/octet-stream"


def respond(feats: torch.Tensor, *, model: str, form: str, encoding: str, accept: str, request_id: str, billed: int,
            remaining: int | None, replayed: bool) -> Response:
    n, d = feats.shape
    headers = {"X-Request-Id": request_id, "X-Billed": str(billed), "X-Quota-Remaining": "" if remaining is None else str(remaining)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if BINARY in accept:
        headers["X-Embedding-Shape"] = f"{n},{d}"
        return Response(feats.numpy().astype("<f4", copy=False).tobytes(), media_type=BINARY, headers=headers)
    if form == "openai":
        arr = feats.numpy().astype("<f4", copy=False)
        rows = [base64.b64encode(arr[i].tobytes()).decode() for i in range(n)] if encoding == "base64" else feats.tolist()
        body = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)],
            "model": model,
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }
        return Response(json.dumps(body), media_type="application/json", headers=headers)
    body = EmbeddingsResponse(model=model, dim=d, count=n, embeddings=feats.tolist(), billed=billed, remaining=remaining)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
