"""Stage what `benchmarks/gpu_paper.sh` needs on a machine that receives at most 64 MiB per command:
the shared victim's weights, the surrogate images and random subsets of the downstream sets, repacked
as the same ImageFolder archives (<name>/<split>.tar.gz, members <split>/<class>/<file>, original bytes),
plus the wheels the device lacks (pydantic). Everything goes under one git-ignored folder (default
.devdata/paper) whose size is checked against the budget.

    python benchmarks/stage_gpu_data.py --shared ../shared          # the paper run's subsets (~57 MiB)
    python benchmarks/stage_gpu_data.py --shared ../shared --tiny --out /tmp/stage   # a CPU smoke run's
    python benchmarks/stage_gpu_data.py --table11      # benchmarks/gpu_table11.sh's (-> .devdata/table11)

The subsets (a deviation from the paper, stated in docs/gpu_runbook.md): surrogate = tiny_imagenet32 `val`
(10,000 images; 5% = 2,500 and 3% = 1,500 are drawn from it), GTSRB 7,000 train / 3,000 test, MNIST and
Fashion-MNIST 10,000 train / 5,000 test each. The paper probes the full sets.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

FULL = {"gtsrb": (7000, 3000), "mnist": (10000, 5000), "fashion_mnist": (10000, 5000)}
TINY = {"gtsrb": (300, 200), "mnist": (300, 200), "fashion_mnist": (300, 200)}
TABLE11 = {**FULL, "cifar10": (10000, 5000)}
SERVICE_WHEELS = ["fastapi==0.165.0", "starlette==1.10.0", "uvicorn==0.54.0", "h11==0.16.0", "httpx==0.28.1", "httpcore==1.0.9",
                  "anyio==4.16.0", "idna==3.20", "certifi==2026.10.19.post1", "python-multipart==0.0.34",
                  "prometheus-client==0.26.0", "annotated-doc==0.0.7"]  # the served API (Table XI runs over HTTP)
WHEELS = ["pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5"]  # pydantic-core pinned by pydantic


def subset_archive(src: Path, dst: Path, split: str, n: int, seed: int) -> int:
    """Copy a random n-member subset of src (a <split>/<class>/<file> tar.gz) to dst in one sequential pass
    (a gzip stream cannot seek back); -> members written."""
    with tarfile.open(src, "r:gz") as tin:
        names = [m.name for m in tin.getmembers() if m.isfile()]
    rng = random.Random(f"{src.name}:{seed}")
    chosen = set(rng.sample(names, min(n, len(names))))
    dst.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(src, "r|gz") as tin, tarfile.open(dst, "w:gz", compresslevel=6) as tout:
        for m in tin:
            if m.isfile() and m.name in chosen:
                data = tin.extractfile(m).read()
                info = tarfile.TarInfo(m.name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tout.addfile(info, io.BytesIO(data))
                count += 1
    return count


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", default=None, help="default .devdata/paper (.devdata/table11 with --table11)")
    ap.add_argument("--tiny", action="store_true", help="a few hundred images per set (CPU smoke run)")
    ap.add_argument("--table11", action="store_true", help="stage Table XI's GPU run: the imported EfficientNet-Lite0, "
                    "CIFAR-10 too, the service's wheels (default --out .devdata/table11)")
    ap.add_argument("--victim", default="runs/victims/efficientnet_lite0", help="--table11: the imported checkpoint (stealkit import)")
    ap.add_argument("--no-wheels", action="store_true")
    ap.add_argument("--python-version", default="3.12", help="the device's Python (3.12 on the lent H100/H200)")
    ap.add_argument("--budget-mib", type=float, default=60.0, help="the staged folder's limit (the device takes 64 MiB with the tree)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shared = Path(args.shared)
    out = Path(args.out or (".devdata/table11" if args.table11 else ".devdata/paper"))
    if args.table11:
        ckpt = Path(args.victim)
        if not ckpt.with_suffix(".safetensors").is_file():
            sys.exit(f"{ckpt}.safetensors not found: import the victim first (see benchmarks/table11_real_world_cpu.sh)")
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    if args.table11:
        (out / "victims").mkdir()
        for suffix in (".safetensors", ".json"):
            shutil.copy(ckpt.with_suffix(suffix), out / "victims" / (ckpt.name + suffix))
    else:
        shutil.copytree(shared / "victims" / "cifar10_simclr_resnet18", out / "victims" / "cifar10_simclr_resnet18")
    sizes = TINY if args.tiny else TABLE11 if args.table11 else FULL
    written = {}
    for name, (n_train, n_test) in sizes.items():
        for split, n in (("train", n_train), ("test", n_test)):
            written[f"{name}/{split}"] = subset_archive(shared / "data" / name / f"{split}.tar.gz", out / "data" / name / f"{split}.tar.gz", split, n, args.seed)
    if args.tiny:
        written["tiny_imagenet32/val"] = subset_archive(shared / "data" / "tiny_imagenet32" / "val.tar.gz",
                                                        out / "data" / "tiny_imagenet32" / "val.tar.gz", "val", 400, args.seed)
    else:
        (out / "data" / "tiny_imagenet32").mkdir(parents=True)
        shutil.copy(shared / "data" / "tiny_imagenet32" / "val.tar.gz", out / "data" / "tiny_imagenet32" / "val.tar.gz")
        written["tiny_imagenet32/val"] = 10000
    if not args.no_wheels:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", args.python_version,
               "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--platform", "manylinux2014_x86_64", "-d", str(out / "wheels"), *WHEELS,
               *(SERVICE_WHEELS if args.table11 else [])]
        subprocess.run(cmd, check=True)
    mib = folder_mib(out)
    (out / "STAGED.json").write_text(json.dumps({"images": written, "mib": mib, "tiny": args.tiny, "table11": args.table11, "seed": args.seed}, indent=2))
    print(f"staged {out}: {mib:.1f} MiB ({', '.join(f'{k} {v}' for k, v in written.items())})")
    if mib > args.budget_mib:
        sys.exit(f"{out} is {mib:.1f} MiB, over the {args.budget_mib} MiB budget: stage smaller subsets")


if __name__ == "__main__":
    main()
