"""Paying for answers once: ask the target batch by batch, keep the answers on disk, and write down every
augmented query the moment it is billed (so a crashed and resumed run reports both payments)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from stealkit.targets.base import Target


def query_target(target: Target, images: torch.Tensor, batch_size: int = 256, progress: bool = False, desc: str = "querying") -> torch.Tensor:
    """Ask the target once per image, batch by batch -> float32 N×D. Each image costs one query."""
    out = []
    bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        out.append(target.embed(chunk).float())
        bar.update(len(chunk))
    bar.close()
    return torch.cat(out) if out else torch.zeros(0, target.feature_dim)


def cached_query(target, images: torch.Tensor, cache: Path | None, batch_size: int, progress: bool) -> tuple[torch.Tensor, int, int]:
    """Answers for `images`, from `cache` (safetensors) when it holds these very images -> (features,
    billed in all, newly billed now)."""
    if cache is not None and cache.exists():
        blob = load_file(str(cache))
        if blob["images"].shape == images.shape and torch.equal(blob["images"], images):
            return blob["features"], int(blob["billed"].item()), 0
    before = target.queries
    feats = query_target(target, images, batch_size, progress)
    billed = target.queries - before
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        save_file({"images": images.contiguous(), "features": feats.contiguous(), "billed": torch.tensor([billed])}, str(tmp))
        os.replace(tmp, cache)
    return feats, billed, billed


class BillingJournal:
    """An append-only JSONL file of paid per-epoch queries, fsync'ed before the answers are used."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    def record(self, billed: int) -> None:
        if self.path is None or billed <= 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"billed": int(billed), "time": time.time()}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def total(self) -> int | None:
        """Every query paid, in every attempt of the run (a crashed one included); None if no record."""
        if self.path is None or not self.path.exists():
            return None
        return sum(json.loads(line)["billed"] for line in self.path.read_text().splitlines() if line.strip())


def paying_query(target, batch_size: int, journal: BillingJournal):
    """-> query(images uint8 N×3×H×W) -> (answers N×D, billed). What the target billed is journaled even if
    the call or the process fails afterwards: a resumed run re-pays the epochs after its last checkpoint,
    and the report counts both payments."""

    def query(images: torch.Tensor) -> tuple[torch.Tensor, int]:
        before = target.queries
        try:
            out = query_target(target, images, batch_size)
        finally:
            journal.record(target.queries - before)
        return out, target.queries - before

    return query
