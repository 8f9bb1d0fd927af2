"""POST /v1/embeddings bodies by Content-Type -> (image groups, answer form, embedding encoding).

multipart/form-data (PNG/JPEG files), application/json ({"images": [...]} or the common embedding-API
form {"input": [...]}), application/octet-stream (raw uint8 with X-Array-Shape, or .npy) and
application/x-npy. Decoding runs in the thread pool; every limit is checked before pixels are decoded.
"""

from __future__ import annotations

import json
import re

import numpy as np
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from stealkit.service.decode import BadInput, Group, Limits, b64_bytes, check_count, decode_images, decode_npy, decode_raw
from stealkit.service.multipart import parse_files
from stealkit.service.schemas import EmbeddingsRequest, OpenAIEmbeddingsRequest

BINARY = "application/octet-stream"
FORMS = ("stealkit", "openai")
MAX_JSON_DEPTH = 16  # a request needs 2 ({"images": [...]}); the parser recurses once per level
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET_STEP = np.zeros(256, np.int32)
_BRACKET_STEP[list(b"[{")], _BRACKET_STEP[list(b"]}")] = 1, -1
_SCAN_CHUNK = 1 << 20


def _too_deep() -> BadInput:
    return BadInput(422, f"invalid JSON body: nesting deeper than {MAX_JSON_DEPTH} levels; "
                         'send {"images": [...]} or {"input": [...]} with base64 strings')


def check_json_depth(body) -> None:
    """Raise BadInput(422) when brackets outside strings nest deeper than MAX_JSON_DEPTH: a cheap scan
    before parsing (the parser recurses once per level, so a body of 100,000 '[' must never reach it)."""
    outside_strings = _JSON_STRING.sub(b'""', body)
    if _deeper_than(np.frombuffer(outside_strings, np.uint8), MAX_JSON_DEPTH):
        raise _too_deep()


def _deeper_than(text: np.ndarray, limit: int) -> bool:
    """Whether the brackets of `text` nest deeper than `limit`, scanned 1 MiB at a time (bounded memory)."""
    depth = 0
    for start in range(0, len(text), _SCAN_CHUNK):
        levels = np.cumsum(_BRACKET_STEP[text[start:start + _SCAN_CHUNK]]) + depth
        if levels.max() > limit:
            return True
        depth = int(levels[-1])
    return False


def _invalid(exc: ValidationError) -> BadInput:
    return BadInput(422, "invalid JSON body: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:10]))


def _json(body, limits: Limits, feature_dim: int) -> tuple[list[tuple[str, bytes]], str, str]:
    check_json_depth(body)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(422, f"invalid JSON body: {str(exc)[:200]}") from None
    except RecursionError:  # the scan is a guard; should a body still slip past it, the answer is the same
        raise _too_deep() from None
    if isinstance(doc, dict) and "input" in doc:
        try:
            req = OpenAIEmbeddingsRequest.model_validate(doc)
        except ValidationError as exc:
            raise _invalid(exc) from None
        if req.dimensions is not None and req.dimensions != feature_dim:
            raise BadInput(422, f"dimensions={req.dimensions} is not served: this model answers {feature_dim}-d embeddings")
        items = [req.input] if isinstance(req.input, str) else req.input
        form, encoding = "openai", req.encoding_format
    else:
        try:
            items = EmbeddingsRequest.model_validate(doc).images
        except ValidationError as exc:
            raise _invalid(exc) from None
        form, encoding = "stealkit", "float"
    check_count(len(items), limits.max_batch)
    return [(f"image {i}", b64_bytes(t, f"image {i}")) for i, t in enumerate(items)], form, encoding


async def decode_request(request: Request, body: bytearray, limits: Limits, feature_dim: int) -> tuple[list[Group], str, str]:
    """-> (groups, form, encoding): form 'stealkit' or 'openai' (also chosen by ?format=), encoding 'float' or 'base64'."""
    ctype = request.headers.get("content-type", "")
    kind = ctype.split(";")[0].strip().lower()
    form, encoding = request.query_params.get("format", "stealkit"), "float"
    if form not in FORMS:
        raise BadInput(422, f"format={form[:40]!r} is not an answer form; use one of {', '.join(FORMS)}")
    if kind == "multipart/form-data":
        files = await run_in_threadpool(parse_files, body, ctype, limits.max_batch)
        groups = await run_in_threadpool(decode_images, files, limits)
    elif kind == "application/json":
        files, json_form, encoding = await run_in_threadpool(_json, body, limits, feature_dim)
        form = "openai" if json_form == "openai" else form
        groups = await run_in_threadpool(decode_images, files, limits)
    elif kind == "application/x-npy":
        groups = await run_in_threadpool(decode_npy, body, limits)
    elif kind == BINARY:
        groups = await run_in_threadpool(
            decode_raw, body, request.headers.get("x-array-shape"), request.headers.get("x-array-dtype"), limits
        )
    else:
        raise BadInput(415, f"unsupported Content-Type {kind[:80] or '(none)'!r}; use multipart/form-data, application/json or {BINARY}")
    return groups, form, encoding
