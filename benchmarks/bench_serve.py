"""Served throughput (images/s) and latency (p50/p99) of `stealkit serve`, with and without cross-request
batching, for 1, 8 and 32 concurrent clients sending batches of 1 and 16 images, and one client sending
batches of 256 (the reference: the issue's target is that 32 concurrent batch-1 clients reach >= 70% of
its images/s, with batching).

A victim encoder (random init; speed does not depend on the weights) is saved and served by `stealkit
serve` in a subprocess on 127.0.0.1 (once with --batching, once with --no-batching), and queried with
binary requests (raw uint8 in, float32 out) from client threads. Each request is a full round trip:
auth, ledger reservation + commit (SQLite, synchronous=FULL), encoder, response. Every client sends one
untimed warm-up request first. The load average is recorded before and after each row: other work on
the machine's cores shows there.

    python benchmarks/bench_serve.py --device cpu --arch resnet18 --seconds 10
Writes a JSON record (device, versions, seed, settings, load, results) to --out and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
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
from stealkit.service.ledger import Ledger
from stealkit.service.testing import ServeProcess


def run_row(url: str, key: str, clients: int, batch: int, size: int, seconds: float, max_requests: int, seed: int) -> dict:
    """`clients` threads, each sending `batch` images per request for `seconds` (after one warm-up request)."""
    rng = np.random.default_rng(seed)
    bodies = [rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8).tobytes() for _ in range(clients)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream",
               "X-Array-Shape": f"{batch},3,{size},{size}", "Accept": "application/octet-stream"}
    latencies, errors, lock = [], [], threading.Lock()
    ready, go = threading.Barrier(clients + 1), threading.Event()
    window = {}

    def client(i: int):
        with httpx.Client(base_url=url, timeout=600) as c:
            c.post("/v1/embeddings", content=bodies[i], headers=headers).raise_for_status()
            ready.wait()  # every client warmed up
            go.wait()
            while time.perf_counter() < window["stop"]:
                with lock:
                    if len(latencies) >= max_requests:
                        return
                t0 = time.perf_counter()
                r = c.post("/v1/embeddings", content=bodies[i], headers=headers)
                dt = time.perf_counter() - t0
                with lock:
                    (latencies if r.status_code == 200 else errors).append(dt if r.status_code == 200 else r.status_code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    window["stop"] = t0 + seconds
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "clients": clients, "batch": batch, "requests": len(lat), "errors": len(errors), "images": len(lat) * batch,
        "wall_s": round(wall, 3), "images_per_s": round(len(lat) * batch / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
    }


def serve_and_measure(ckpt: Path, tmp: Path, device: str, batching: bool, args) -> tuple[list[dict], dict]:
    mode = "batched" if batching else "unbatched"
    ledger = tmp / f"ledger-{mode}.sqlite"
    key = Ledger(ledger).create_account("bench")
    flags = ["--checkpoint", str(ckpt), "--ledger", str(ledger), "--device", device, "--log-level", "warning",
             "--batching" if batching else "--no-batching", "--batch-wait-ms", str(args.batch_wait_ms), "--limit-concurrency", "1024"]
    if args.batch_max_images:
        flags += ["--batch-max-images", str(args.batch_max_images)]
    rows = []
    with ServeProcess(flags, env={"OMP_NUM_THREADS": str(os.cpu_count())}, log_path=tmp / f"{mode}.log") as srv:
        plan = [(1, args.reference_batch)] + [(c, b) for b in args.batch_sizes for c in args.clients]
        for clients, batch in plan:
            row = {"mode": mode, **run_row(srv.url, key, clients, batch, args.size, args.seconds, args.max_requests, args.seed)}
            rows.append(row)
            print(f"{mode:>9} {clients:>7} {batch:>5} {row['requests']:>8} {row['images_per_s']:>9} {row['p50_ms']!s:>9} "
                  f"{row['p99_ms']!s:>9}   load {row['load_before']}->{row['load_after']}", flush=True)
        billed = Ledger(ledger).usage("bench").queries
    return rows, {"billed_images": billed, "served_images": sum(r["images"] for r in rows)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=32, help="image side (the encoder's input size)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clients", default="1,8,32", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--batch-sizes", default="1,16", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--reference-batch", type=int, default=256, help="one client's batch size for the reference row")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed window per row")
    ap.add_argument("--max-requests", type=int, default=5000, help="per row")
    ap.add_argument("--batch-wait-ms", type=float, default=2.0)
    ap.add_argument("--batch-max-images", type=int, default=None, help="default: the server's (32 on CPU, 256 on a GPU)")
    ap.add_argument("--modes", default="batched,unbatched")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/serve_batching_<device>.json)")
    args = ap.parse_args(argv)
    seed_everything(args.seed)
    device = pick_device(args.device)
    load_start = os.getloadavg()
    print(f"{'mode':>9} {'clients':>7} {'batch':>5} {'requests':>8} {'images/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    rows, ledgers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_encoder(build_encoder(args.arch, input_size=args.size), Path(tmp) / "victim")
        for mode in args.modes.split(","):
            got, ledgers[mode] = serve_and_measure(ckpt, Path(tmp), str(device), mode == "batched", args)
            rows += got
    reference = next((r for r in rows if r["mode"] == "unbatched" and r["clients"] == 1 and r["batch"] == args.reference_batch), None)
    target = next((r for r in rows if r["mode"] == "batched" and r["clients"] == 32 and r["batch"] == 1), None)
    ratio = round(target["images_per_s"] / reference["images_per_s"], 3) if reference and target else None
    env = environment()
    record = {
        "benchmark": "bench_serve", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else env.get("device_name"),
        "environment": env, "seed": args.seed,
        "settings": {**vars(args), "transport": "binary uint8 in / float32 out", "server": "stealkit serve (uvicorn, 1 worker)",
                     "ledger": "SQLite, synchronous=FULL", "cpu_count": os.cpu_count()},
        "load_average": {"start": load_start, "end": os.getloadavg(),
                         "note": "1-minute load average; above the core count means the cores were shared with other work"},
        "results": rows, "ledgers": ledgers,
        "target": {"what": "32 concurrent batch-1 clients (batched) / one batch-256 client (unbatched), images/s", "ratio": ratio,
                   "goal": 0.7, "met": None if ratio is None else ratio >= 0.7},
    }
    out = Path(args.out or f"benchmarks/results/serve_batching_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"served {args.arch} {args.size}x{args.size} on {record['device_name']} ({device}); load average {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    if ratio is not None:
        print(f"32 batch-1 clients with batching reach {100 * ratio:.0f}% of one batch-{args.reference_batch} client's images/s (goal 70%)")
    print(f"ledgers billed {json.dumps(ledgers)} (warm-up requests included in billed); JSON: {out}")
    return record


if __name__ == "__main__":
    main()
