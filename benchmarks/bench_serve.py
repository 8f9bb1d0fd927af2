"""Served throughput (images/s) and latency (p50/p99) of `stealkit serve` for batch sizes 1, 64, 256.

A victim encoder (random init; speed does not depend on the weights) is saved, served by
`stealkit serve` in a subprocess on 127.0.0.1, and queried by RemoteTarget-style binary requests
(raw uint8 in, float32 out) from `--clients` threads. Each request is one full round trip:
decode, auth, ledger reservation + commit (SQLite, synchronous=FULL), encoder, response.

    python benchmarks/bench_serve.py --device cpu --arch resnet18 --seconds 10
Writes a JSON record (device, versions, seed, settings, results) to --out and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from stealkit.models.checkpoint import save_encoder
from stealkit.models.encoder import build_encoder
from stealkit.runtime import environment, pick_device, seed_everything
from stealkit.service.background import free_port
from stealkit.service.ledger import Ledger


def start_server(ckpt: Path, ledger: Path, port: int, device: str) -> subprocess.Popen:
    code = "import sys; from stealkit.cli import app; app(sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--checkpoint", str(ckpt), "--ledger", str(ledger), "--host", "127.0.0.1",
         "--port", str(port), "--device", device, "--log-level", "warning", "--max-batch", "1024"],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + proc.stderr.read().decode()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start within 120 s")


def run_batch(url: str, key: str, batch: int, seconds: float, max_requests: int, clients: int, size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    body = rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8).tobytes()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream",
               "X-Array-Shape": f"{batch},3,{size},{size}", "Accept": "application/octet-stream"}
    with httpx.Client(base_url=url, timeout=120) as c:  # warm-up
        for _ in range(3):
            c.post("/v1/embeddings", content=body, headers=headers).raise_for_status()
    latencies, lock = [], threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker():
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.perf_counter() < stop_at:
                with lock:
                    if len(latencies) >= max_requests:
                        return
                t0 = time.perf_counter()
                r = c.post("/v1/embeddings", content=body, headers=headers)
                dt = time.perf_counter() - t0
                r.raise_for_status()
                with lock:
                    latencies.append(dt)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "batch": batch, "requests": len(lat), "images": len(lat) * batch, "wall_s": round(wall, 3),
        "images_per_s": round(len(lat) * batch / wall, 1), "requests_per_s": round(len(lat) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "mean_ms": round(float(lat.mean()), 2),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=32, help="image side (the encoder's input size)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", default="1,64,256")
    ap.add_argument("--seconds", type=float, default=10.0, help="per batch size")
    ap.add_argument("--max-requests", type=int, default=2000, help="per batch size")
    ap.add_argument("--clients", type=int, default=1, help="concurrent client threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/serve_<device>.json)")
    args = ap.parse_args(argv)
    seed_everything(args.seed)
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_encoder(build_encoder(args.arch, input_size=args.size), Path(tmp) / "victim")
        ledger = Path(tmp) / "ledger.sqlite"
        key = Ledger(ledger).create_account("bench")
        port = free_port()
        proc = start_server(ckpt, ledger, port, str(device))
        try:
            url = f"http://127.0.0.1:{port}"
            rows = [
                run_batch(url, key, int(b), args.seconds, args.max_requests, args.clients, args.size, args.seed)
                for b in args.batch_sizes.split(",")
            ]
            billed = Ledger(ledger).usage("bench").queries
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    env = environment()
    record = {
        "benchmark": "bench_serve", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else env.get("device_name"),
        "environment": env, "seed": args.seed,
        "settings": {**vars(args), "transport": "binary uint8 in / float32 out", "server": "stealkit serve (uvicorn, 1 process)",
                     "torch_threads_server": "default", "cpu_count": os.cpu_count()},
        "results": rows, "ledger_billed_images": billed,
    }
    out = Path(args.out or f"benchmarks/results/serve_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"served {args.arch} {args.size}x{args.size} on {record['device_name']} ({device}), {args.clients} client(s)")
    print(f"{'batch':>6} {'requests':>9} {'images/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    for r in rows:
        print(f"{r['batch']:>6} {r['requests']:>9} {r['images_per_s']:>10} {r['p50_ms']:>9} {r['p99_ms']:>9}")
    print(f"ledger billed {billed} images (warm-up included); JSON: {out}")
    return record


if __name__ == "__main__":
    main()
