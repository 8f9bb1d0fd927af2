"""RemoteTarget: an EaaS API over HTTP (stealkit's server, or any API speaking its protocol).

POST {url}/v1/embeddings with raw uint8 N×3×H×W (X-Array-Shape) and, by default,
`Accept: application/octet-stream` -> little-endian float32 N×D: answers equal the served
encoder's output bitwise. Batches of `batch_size`; retries with exponential back-off (and the
server's Retry-After) on 408, 429, 5xx and connection errors; an on-disk cache of answers keyed by
SHA-256 of each image (written as each batch is answered), so a crashed or repeated attack never
pays twice for an image; the hard budget of Target counts only images actually sent.

Every batch carries an Idempotency-Key: SHA-256 of a salt and the batch's pixels. Retries of a batch
send the same key, so an answer lost on the way back (the server billed and answered, the connection
dropped) is replayed from the server's ledger, billed 0. The salt is kept in the answer cache, so a
run resumed after a crash between the server's answer and the cache write also gets a replay; without
a cache the salt is drawn per RemoteTarget and a per-call counter joins the key. Another target
(another thief, another attack of an experiment), or the same target without a cache, sending the same
images again makes a new request, billed again.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from stealkit.db import Database
from stealkit.targets.base import BudgetExceeded, Target

BINARY = "application/octet-stream"


class QuotaExhausted(BudgetExceeded):
    """The server refused the request: the account's quota would be exceeded (HTTP 402); nothing billed."""


class RemoteError(RuntimeError):
    """The API answered with an error we cannot retry, or kept failing after all retries."""


def image_keys(images: torch.Tensor) -> list[bytes]:
    """SHA-256 of each image's shape and uint8 pixels -> N digests (32 bytes each)."""
    arr = images.contiguous().numpy()
    shape = ",".join(map(str, arr.shape[1:])).encode()
    return [hashlib.sha256(shape + b"|" + arr[i].tobytes()).digest() for i in range(len(arr))]


ANSWER_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    ns TEXT, key {blob}, dim {int}, feats {blob}, time {real}, PRIMARY KEY (ns, key)
){without_rowid};
CREATE TABLE IF NOT EXISTS salts (ns TEXT PRIMARY KEY, salt TEXT NOT NULL)
"""


class AnswerCache:
    """SQLite table (namespace, image hash) -> float32 feature vector; one transaction per batch."""

    def __init__(self, path: str | Path, namespace: str):
        self.path, self.namespace = Path(path), namespace
        self._db = Database.open(self.path)
        self._db.create(ANSWER_SCHEMA)
        with self._db.transaction() as tx:
            tx.execute("INSERT INTO salts (ns, salt) VALUES (?, ?) ON CONFLICT (ns) DO NOTHING", (namespace, secrets.token_hex(16)))
            self.salt = tx.execute("SELECT salt FROM salts WHERE ns = ?", (namespace,)).fetchone()[0]

    def get_many(self, keys: list[bytes]) -> dict[bytes, torch.Tensor]:
        found = {}
        uniq = list(dict.fromkeys(keys))
        with self._db.read() as tx:
            for i in range(0, len(uniq), 500):
                part = uniq[i : i + 500]
                q = f"SELECT key, feats FROM answers WHERE ns = ? AND key IN ({','.join('?' * len(part))})"
                for key, blob in tx.execute(q, (self.namespace, *part)).fetchall():
                    found[bytes(key)] = torch.from_numpy(np.frombuffer(blob, dtype="<f4").copy())
        return found

    def put_many(self, keys: list[bytes], feats: torch.Tensor) -> None:
        arr = feats.detach().cpu().float().numpy().astype("<f4", copy=False)
        now = time.time()
        with self._db.transaction() as tx:
            tx.executemany(
                "INSERT INTO answers (ns, key, dim, feats, time) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (ns, key) DO UPDATE SET dim = excluded.dim, feats = excluded.feats, time = excluded.time",
                [(self.namespace, k, arr.shape[1], arr[i].tobytes(), now) for i, k in enumerate(keys)],
            )

    def __len__(self) -> int:
        with self._db.read() as tx:
            return int(tx.execute("SELECT COUNT(*) FROM answers WHERE ns = ?", (self.namespace,)).fetchone()[0])

    def close(self) -> None:
        self._db.close()


class RemoteTarget(Target):
    """images uint8 N×3×H×W -> float32 N×D from an EaaS API; `queries` = images sent and billed."""

    def __init__(
        self,
        url: str,
        api_key: str,
        budget: int | None = None,
        batch_size: int = 256,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        cache_dir: str | Path | None = None,
        cache_namespace: str | None = None,
        transport: str = "binary",
        client: httpx.Client | None = None,
        sleep=time.sleep,
        idempotency: bool = True,
    ):
        super().__init__(budget)
        if transport not in ("binary", "json"):
            raise ValueError(f"transport must be 'binary' or 'json', got {transport!r}")
        if batch_size < 1 or retries < 0:
            raise ValueError(f"need batch_size >= 1 and retries >= 0, got {batch_size}, {retries}")
        self.url = url.rstrip("/")
        self.batch_size, self.retries, self.backoff, self.max_backoff = batch_size, retries, backoff, max_backoff
        self.transport, self._sleep, self.idempotency = transport, sleep, idempotency
        self.replayed = 0  # images answered from the server's stored answer of an earlier, billed request
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._client = client or httpx.Client(base_url=self.url, timeout=timeout)
        self._owns_client = client is None
        self.cache = AnswerCache(Path(cache_dir) / "answers.sqlite", cache_namespace or self.url) if cache_dir else None
        self._salt = (self.cache.salt if self.cache is not None else secrets.token_hex(16)).encode()  # of the Idempotency-Keys
        self._posts = 0  # without a cache, part of each key: sending the same images again is a new request
        self.in_flight_patience = 2 * timeout  # seconds to wait for our own earlier attempt (HTTP 409)
        self.cache_hits = 0
        self.retried = 0
        self._dim: int | None = None

    # ---- HTTP -----------------------------------------------------------------------------
    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None and (ra := response.headers.get("retry-after")):
            try:
                return min(self.max_backoff, max(0.0, float(ra)))
            except ValueError:
                pass
        return min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        """One API call with retries on 408 / 409 (same Idempotency-Key still running) / 429 / 5xx / connection errors;
        raises on other errors. A retried POST carries the same Idempotency-Key, so it is never billed twice."""
        headers = {**self._auth, **kw.pop("headers", {})}
        attempt = in_flight_wait = 0
        while True:
            response, error = None, None
            try:
                response = self._client.request(method, path, headers=headers, **kw)
            except httpx.TransportError as exc:
                error = exc
            if error is None and response.status_code not in (408, 409, 429) and response.status_code < 500:
                break
            if error is None and response.status_code == 409 and in_flight_wait < self.in_flight_patience:
                # Our own earlier attempt is still being answered (it outlived our timeout): wait for it,
                # outside the retry budget; its answer is paid for and comes back as a replay.
                delay = self._delay(0, response)
                in_flight_wait += delay
                self.retried += 1
                self._sleep(delay)
                continue
            if attempt == self.retries:
                what = f"{error.__class__.__name__}: {error}" if error else f"HTTP {response.status_code}: {_detail(response)}"
                raise RemoteError(f"{method} {self.url}{path} failed after {attempt + 1} attempts ({what})")
            self.retried += 1
            self._sleep(self._delay(attempt, response))
            attempt += 1
        if response.status_code == 401:
            raise PermissionError(f"{self.url} refused the API key: {_detail(response)}")
        if response.status_code == 402:
            raise QuotaExhausted(f"{self.url}: {_detail(response)}")
        if response.status_code >= 400:
            raise RemoteError(f"{method} {self.url}{path} -> HTTP {response.status_code}: {_detail(response)}")
        return response

    def info(self) -> dict:
        """The served model's description (GET /v1/model; not billed)."""
        return self._request("GET", "/v1/model").json()

    def usage(self) -> dict:
        """The server's ledger view of this account (GET /v1/usage)."""
        return self._request("GET", "/v1/usage").json()

    @property
    def feature_dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.info()["feature_dim"])
        return self._dim

    def _post(self, images: torch.Tensor) -> torch.Tensor:
        """One batch uint8 n×3×H×W -> float32 n×D, billed n by the server once (a replayed answer was
        billed by the earlier request with the same key: a lost answer, or a run that crashed)."""
        x = images.contiguous()
        headers = {"Content-Type": BINARY, "X-Array-Shape": ",".join(map(str, x.shape))}
        headers["Accept"] = BINARY if self.transport == "binary" else "application/json"
        content = x.numpy().tobytes()
        if self.idempotency:
            shape = headers["X-Array-Shape"].encode()
            # With a cache, an image already answered is never sent again, so the same key means a retry or a
            # resumed run; without one, a call counter keeps deliberate repeats apart (billed, fresh answers).
            self._posts += 1
            call = b"" if self.cache is not None else str(self._posts).encode()
            headers["Idempotency-Key"] = "stealkit-" + hashlib.sha256(self._salt + b"|" + call + b"|" + shape + b"|" + content).hexdigest()
        r = self._request("POST", "/v1/embeddings", content=content, headers=headers)
        if r.headers.get("idempotent-replayed") == "true":
            self.replayed += len(x)
        if self.transport == "binary":
            n, d = (int(s) for s in r.headers["x-embedding-shape"].split(","))
            feats = torch.from_numpy(np.frombuffer(r.content, dtype="<f4").reshape(n, d).astype(np.float32))
        else:
            feats = torch.tensor(r.json()["embeddings"], dtype=torch.float32)
        if feats.shape[0] != len(x):
            raise RemoteError(f"sent {len(x)} images, got {feats.shape[0]} feature vectors back")
        self._dim = feats.shape[1]
        return feats

    # ---- Target -----------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Like Target.embed, but cached images are answered locally, are not sent and are not billed:
        the budget is checked against the images that will be sent, and `queries` grows batch by batch
        as the server answers (so it stays honest if a later batch fails)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images N×3×H×W, got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise TypeError(f"RemoteTarget sends uint8 pixels; got {images.dtype} (convert with .mul(255).round().to(torch.uint8))")
        if len(images) == 0:
            return torch.zeros(0, self.feature_dim)
        images = images.cpu()
        if self.cache is None:
            self._check_budget(len(images))
            return self._embed(images)
        keys = image_keys(images)
        answers = self.cache.get_many(keys)
        first = {}
        for i, k in enumerate(keys):
            if k not in answers:
                first.setdefault(k, i)
        todo = list(first.values())
        self._check_budget(len(todo))
        self.cache_hits += len(images) - len(todo)
        for s in range(0, len(todo), self.batch_size):
            idx = todo[s : s + self.batch_size]
            feats = self._post(images[idx])
            self.cache.put_many([keys[i] for i in idx], feats)
            self.queries += len(idx)
            answers.update(zip((keys[i] for i in idx), feats))
        return torch.stack([answers[k] for k in keys])

    def _check_budget(self, n: int) -> None:
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExceeded(
                f"query of {n} new images refused: {self.queries} of the budget of {self.budget} already spent "
                f"({self.budget - self.queries} left); raise the budget or query fewer images"
            )

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """No cache: every image is sent, batch by batch; `queries` counts each answered batch."""
        out = []
        for s in range(0, len(images), self.batch_size):
            out.append(self._post(images[s : s + self.batch_size]))
            self.queries += len(out[-1])
        return torch.cat(out)

    def _billed(self, n: int) -> int:
        return 0  # embed() counts each answered batch itself (see its docstring)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except (ValueError, AttributeError):
        return response.text[:500]
