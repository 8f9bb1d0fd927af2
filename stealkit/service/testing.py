"""Helpers for tests and benchmarks of the server: ledger URLs for both backends, and `stealkit serve`
in a subprocess.

PostgreSQL: STEALKIT_TEST_POSTGRES names a server (postgresql://user@host:port/db; `.ci/run` starts a
throwaway one); each test gets a fresh database on it, dropped afterwards. Without it the PostgreSQL
variants skip with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

POSTGRES_ENV = "STEALKIT_TEST_POSTGRES"
BACKENDS = ("sqlite", "postgresql")


def _skip_or_fail(reason: str):
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " — under CI=true the PostgreSQL tests must run (.ci/run starts a server)")
    pytest.skip(reason)


@contextmanager
def ledger_url(backend: str, tmp_path: Path):
    """A fresh, empty ledger location for `backend` ('sqlite' or 'postgresql')."""
    if backend == "sqlite":
        yield str(Path(tmp_path) / f"ledger-{secrets.token_hex(3)}.sqlite")
        return
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        _skip_or_fail(f"no PostgreSQL server: set {POSTGRES_ENV}=postgresql://user@host:port/db to run the PostgreSQL ledger tests")
    import psycopg

    name = "stealkit_test_" + secrets.token_hex(6)
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as con:
            con.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        _skip_or_fail(f"PostgreSQL at {POSTGRES_ENV} is not reachable: {str(exc).strip().splitlines()[0]}")
    base, _, _ = server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the thread that started it ends (start it from the main thread):
    no orphaned servers after a crashed or killed test run."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ServeProcess:
    """`stealkit serve ARGS` in a subprocess on a free loopback port; `url`, `pid`, `stop()`."""

    def __init__(self, args: list[str], env: dict | None = None, ready_timeout: float = 120.0, log_path: Path | None = None):
        from stealkit.service.background import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = "import sys; from stealkit.cli import app; app(sys.argv[1:])"
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            stdout=self._log, stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, preexec_fn=_die_with_parent,
        )
        self.pid = self.proc.pid
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stealkit serve exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stealkit serve was not ready within {timeout} s: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path and self.log_path.exists() else "(no log)"

    def workers(self) -> list[int]:
        """PIDs of the worker processes (children of the supervisor that serve), from /proc."""
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes()
                if ppid == self.pid and b"multiprocessing" in cmd and b"resource_tracker" not in cmd:
                    out.append(int(entry.name))
        return sorted(out)

    def peak_rss_kib(self, pid: int | None = None) -> int:
        """VmHWM (peak resident memory) of a process, KiB."""
        for line in Path(f"/proc/{pid or self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc status")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def post_raw(client: httpx.Client, key: str, images):
    """POST uint8 images N×C×H×W to /v1/embeddings as a raw octet-stream body -> the answers, float32 N×D (a
    torch tensor); asserts a 200."""
    import numpy as np
    import torch

    r = client.post("/v1/embeddings", content=images.numpy().tobytes(), headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream",
        "X-Array-Shape": ",".join(map(str, images.shape)), "Accept": "application/octet-stream"})
    assert r.status_code == 200, r.text
    return torch.from_numpy(np.frombuffer(r.content, "<f4").reshape(len(images), -1).copy())
