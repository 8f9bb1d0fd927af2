"""Wait until a stealkit server answers /readyz (the benchmark scripts start one in the background).

    python benchmarks/wait_ready.py http://127.0.0.1:8765 [--timeout 120]
Exits 0 once it answers 200, 1 with a message after the timeout.
"""

from __future__ import annotations

import argparse
import time

import httpx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("url")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(args.url.rstrip("/") + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the server at {args.url} did not come up within {args.timeout:.0f} s")


if __name__ == "__main__":
    main()
