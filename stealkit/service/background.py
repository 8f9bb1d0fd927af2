"""Run the server in a background thread on a free loopback port (tests, quickstart, benchmarks).

    with serve_in_thread(create_app(settings, encoder=enc)) as url:
        RemoteTarget(url, key).embed(images)
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", startup_timeout: float = 30.0, log_level: str = "warning",
                    header_timeout: float = 10.0, **config):
    """Start uvicorn for `app` on host:<free port>, yield its base URL, stop it on exit (bounded waits).
    Connections whose request headers take longer than `header_timeout` s are closed (protocol.py);
    `config` goes to uvicorn.Config (e.g. limit_concurrency)."""
    import uvicorn

    from stealkit.service.protocol import GuardedH11Protocol

    protocol = type("ThreadServerProtocol", (GuardedH11Protocol,), {"header_timeout": header_timeout})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5, http=protocol, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn:{port}")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"server on {host}:{port} did not start within {startup_timeout} s")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
