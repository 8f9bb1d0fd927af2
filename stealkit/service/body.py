"""Reading a request body under a byte limit and a deadline.

A declared Content-Length over the limit is refused before anything is read (413); a body that grows
past it while streaming too. A client that sends its body slower than `timeout` seconds in all gets
408 and its connection closed (a drip-feeding client cannot hold a connection or a worker). The body
comes back as a bytearray, so raw arrays become tensors without a copy.
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from stealkit.service.decode import BadInput


class BodyTimeout(BadInput):
    def __init__(self, timeout: float):
        super().__init__(408, f"the request body did not arrive within {timeout:g} s; send it faster or in smaller requests")


async def read_body(request: Request, limit: int, timeout: float) -> bytearray:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 20:
            raise BadInput(400, f"invalid Content-Length {declared[:40]!r}")
        if int(declared) > limit:
            raise BadInput(413, f"request body of {int(declared)} bytes is larger than the limit of {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                if len(body) + len(chunk) > limit:
                    raise BadInput(413, f"request body is larger than the limit of {limit} bytes")
                body += chunk
    except TimeoutError:
        raise BodyTimeout(timeout) from None
    return body
