"""Hostile input against a real `stealkit serve` subprocess on loopback: every case gets its
documented 4xx, costs bounded memory and time, leaves the keep-alive connection usable, and is never
billed (the ledger file is the judge). Request ids reveal nothing about other accounts.

Each case failed on the server before the hardening: a 500 (and a reset connection) for an int64-overflowing
X-Array-Shape or a lying .npy header, +457 MiB for 24 flat 1024×1024 PNGs, 422 for a decompression
bomb, Starlette's 400 for too many files, no deadline for a drip-fed body or headers, and the ledger's
global row number as X-Request-Id.
"""

from __future__ import annotations

import base64
import io
import re
import socket
import struct
import time
import zlib

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from stealkit.models.checkpoint import save_encoder
from stealkit.models.encoder import build_encoder
from stealkit.service.ledger import Ledger
from stealkit.service.testing import ServeProcess

MAX_BATCH, BODY_TIMEOUT, HEADER_TIMEOUT = 32, 1.0, 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One subprocess server for the module: default limits but 32 images per request, 1 s timeouts."""
    tmp = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    ckpt = save_encoder(build_encoder("cnn_tiny"), tmp / "victim")
    ledger = str(tmp / "ledger.sqlite")
    key = Ledger(ledger).create_account("mallory")
    other = Ledger(ledger).create_account("alice")
    args = ["--checkpoint", str(ckpt), "--ledger", ledger, "--device", "cpu", "--max-batch", str(MAX_BATCH),
            "--body-timeout", str(BODY_TIMEOUT), "--header-timeout", str(HEADER_TIMEOUT), "--threads", "1", "--log-level", "warning"]
    with ServeProcess(args, log_path=tmp / "server.log") as proc:
        with httpx.Client(base_url=proc.url, timeout=30) as c:  # warm up: the first answer allocates the model's buffers
            assert post_raw(c, key, np.zeros((2, 3, 32, 32), np.uint8)).status_code == 200
        proc.ledger, proc.key, proc.other = Ledger(ledger), key, other
        proc.billed0 = proc.ledger.usage("mallory").queries
        yield proc


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def post_raw(client, key, arr: np.ndarray, shape: str | None = None):
    headers = {**auth(key), "Content-Type": "application/octet-stream", "X-Array-Shape": shape or ",".join(map(str, arr.shape))}
    return client.post("/v1/embeddings", content=arr.tobytes(), headers=headers)


def flat_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (7, 7, 7)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR declaring width×height and IEND: what a decompression bomb's header says."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def npy_header(shape: tuple, descr: str = "|u1") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def not_billed(server):
    assert server.ledger.usage("mallory").queries == server.billed0
    assert all(r[5] == "served" for r in server.ledger.records("mallory"))


def test_flat_png_flood_is_refused_from_the_headers_without_decoding(server):
    """24 flat 1024×1024 PNGs (a few KiB on the wire, 24 Mi pixels decoded): 413 from the pixel budget,
    and the server's peak memory does not grow (before: +457 MiB)."""
    png = flat_png(1024)
    assert len(png) * 24 < 200_000
    before = server.peak_rss_kib()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/embeddings", files=[("images", (f"{i}.png", png, "image/png")) for i in range(24)], headers=auth(server.key))
        assert r.status_code == 413, r.text
        assert "pixels" in r.json()["detail"] and "4194304" in r.json()["detail"]
        as_json = c.post("/v1/embeddings", json={"images": [base64.b64encode(png).decode()] * 24}, headers=auth(server.key))
        assert as_json.status_code == 413 and "pixels" in as_json.json()["detail"]
    grown_mib = (server.peak_rss_kib() - before) / 1024
    assert grown_mib < 48, f"peak memory grew by {grown_mib:.0f} MiB for a refused request"
    not_billed(server)


@pytest.mark.parametrize(
    "shape,status,words",
    [
        ("1,3,99999999999999999999999,1", 413, "largest side"),  # a side beyond int64
        ("99999999999999999999,3,32,32", 413, "limit of 32"),  # a count beyond int64
        ("4,3,4294967296,4294967296", 413, "largest side"),  # the product beyond int64
        ("1,3," + "9" * 40 + ",1", 422, "integers"),  # more digits than any shape has
        ("2,3,2,2", 422, "needs 24 bytes"),  # a sane shape, the wrong body
    ],
)
def test_array_shapes_are_checked_before_any_arithmetic(server, shape, status, words):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = post_raw(c, server.key, np.zeros(100, np.uint8), shape=shape)
        assert r.status_code == status, r.text
        assert words in r.json()["detail"]
        assert post_raw(c, server.key, np.zeros((1, 3, 8, 8), np.uint8)).status_code == 200  # the server is fine
    server.billed0 += 1
    not_billed(server)


@pytest.mark.parametrize(
    "shape,status,words",
    [
        ((10**7, 3, 1000, 1000), 413, "limit of 32"),  # terabytes declared in a 100-byte body
        ((4, 3, 1024, 1024), 422, "declares shape"),  # within every limit, but the data is not there
        ((1, 3, 10**12, 10**12), 413, "largest side"),
    ],
)
def test_npy_header_is_checked_before_allocating(server, shape, status, words):
    body = npy_header(shape) + b"\0" * 100
    t0 = time.perf_counter()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/embeddings", content=body, headers={**auth(server.key), "Content-Type": "application/x-npy"})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and time.perf_counter() - t0 < 5
    not_billed(server)


def test_decompression_bomb_is_413_with_the_largest_side(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for w, h in ((30000, 30000), (2000, 1500)):  # past PIL's bomb limit, and merely too large
            r = c.post("/v1/embeddings", files=[("images", ("bomb.png", png_header_only(w, h), "image/png"))], headers=auth(server.key))
            assert r.status_code == 413, r.text
            assert "largest side allowed is 1024" in r.json()["detail"]
    not_billed(server)


def test_more_files_than_the_batch_limit_is_413(server):
    tiny = flat_png(4)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/embeddings", files=[("images", (f"{i}.png", tiny, "image/png")) for i in range(MAX_BATCH + 1)], headers=auth(server.key))
        assert r.status_code == 413, r.text
        assert f"more than {MAX_BATCH} files" in r.json()["detail"]
    not_billed(server)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"images": ' + b"[" * 16 + b'"aGk="' + b"]" * 16 + b"}"],
                         ids=["100000-brackets", "17-levels"])
def test_json_nesting_bomb_is_422_naming_the_limit(server, body):
    """Before: the JSON parser recursed until RecursionError, a 500. Now a scan refuses it before parsing."""
    rows = len(server.ledger.records("mallory"))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/embeddings", content=body, headers={**auth(server.key), "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == ('invalid JSON body: nesting deeper than 16 levels; '
                                      'send {"images": [...]} or {"input": [...]} with base64 strings')
    assert len(server.ledger.records("mallory")) == rows
    not_billed(server)


def test_json_nesting_at_the_limit_is_parsed(server):
    """16 levels pass the scan and reach the schema, which names what is wrong."""
    body = b'{"images": ' + b"[" * 15 + b'"aGk="' + b"]" * 15 + b"}"
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/embeddings", content=body, headers={**auth(server.key), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("invalid JSON body: images.0: Input should be a valid string"), r.text
    not_billed(server)


def _connect(server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.settimeout(10)
    return s


def _read_response(s: socket.socket) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def _closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def _request(key: str, shape: str, body: bytes) -> bytes:
    return (f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/octet-stream\r\n"
            f"X-Array-Shape: {shape}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def test_keep_alive_connection_stays_usable_after_refusals(server):
    """Refusals are answered in full: the next request on the same connection is served (a 500 used to reset it)."""
    ok = bytes(3 * 8 * 8)
    with _connect(server) as s:
        for shape, body in (("1,3,99999999999999999999999,1", b"\0" * 10), ("2,3,2,2", b"\0" * 5), ("1,3,8,8", ok)):
            s.sendall(_request(server.key, shape, body))
            status, headers, _ = _read_response(s)
            assert headers.get("connection", "keep-alive") != "close"
        assert status == 200
    server.billed0 += 1
    not_billed(server)


def test_drip_fed_body_gets_408_and_the_connection_is_closed(server):
    head = _request(server.key, "1,3,32,32", b"")[:-4].decode().replace("Content-Length: 0", "Content-Length: 3072").encode() + b"\r\n\r\n"
    with _connect(server) as s:
        s.sendall(head)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < BODY_TIMEOUT + 0.5:  # a byte every 0.2 s, past the deadline
                s.sendall(b"\0")
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, body = _read_response(s)
        assert status == 408 and b"did not arrive within" in body and headers.get("connection") == "close"
        assert _closed_within(s, 5)
        assert time.monotonic() - t0 < BODY_TIMEOUT + 6
    not_billed(server)


def test_drip_fed_headers_get_the_connection_closed(server):
    with _connect(server) as s:
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        closed = False
        try:
            for _ in range(50):  # a header byte every 0.2 s, never finishing: bounded at 10 s
                s.sendall(b"X")
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        assert closed or _closed_within(s, 2)
        assert time.monotonic() - t0 < HEADER_TIMEOUT + 5


def test_request_ids_reveal_nothing_and_an_incoming_one_is_kept(server):
    x = np.zeros((1, 3, 8, 8), np.uint8)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        first = post_raw(c, server.key, x).headers["x-request-id"]
        for _ in range(5):  # another account's traffic in between
            assert post_raw(c, server.other, x).status_code == 200
        second = post_raw(c, server.key, x).headers["x-request-id"]
        assert re.fullmatch(r"req_[0-9a-f]{24}", first) and re.fullmatch(r"req_[0-9a-f]{24}", second) and first != second
        assert not first[4:].isdigit()
        mine = c.post("/v1/embeddings", content=x.tobytes(), headers={**auth(server.key), "Content-Type": "application/octet-stream",
                                                                      "X-Array-Shape": "1,3,8,8", "X-Request-Id": "client-42.a"})
        assert mine.headers["x-request-id"] == "client-42.a"
        odd = c.get("/v1/usage", headers={**auth(server.key), "X-Request-Id": "x" * 300})
        assert re.fullmatch(r"req_[0-9a-f]{24}", odd.headers["x-request-id"])  # not sane: replaced
        assert c.get("/livez").headers["x-request-id"].startswith("req_")
    ids = {r[6] for r in server.ledger.records("mallory")}
    assert {first, second, "client-42.a"} <= ids  # the ledger keeps the id each request was answered with
    server.billed0 += 3
