"""Frozen features for the downstream probes, and an on-disk cache of them.

StolenEncoder (Liu et al., CCS'22), Section V-A 3): a downstream classifier is trained on the
features that the target or stolen encoder, used as a frozen feature extractor, gives for the
downstream training images. Features are extracted once per (encoder, image set) and reused by
every probe.

The cache key is (encoder fingerprint, dataset name/split, N). The fingerprint hashes the
encoder's weights and spec, so a retrained encoder never reads a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from stealkit.models.encoder import embed

FORMAT = "stealkit-features/2"  # 2: fp32 features (1 was bf16 on CUDA)


def extract_features(encoder, images, batch_size: int = 512, device: torch.device | str | None = None,
                     fast: bool = True, progress: bool = False, desc: str = "features") -> torch.Tensor:
    """uint8 images N×3×H×W (or an ImageSet) -> float32 features N×D on the CPU.

    `encoder` is an `nn.Module` (run in eval mode on `device` via `embed`; `fast`: NHWC fp32, see `embed`)
    or any object with an `embed(images) -> features` method (e.g. a Target, whose answers may be
    perturbed by a defence; these are the API's exact answers).
    """
    images = getattr(images, "images", images)
    if isinstance(encoder, nn.Module):
        first = next(encoder.parameters(), None)
        home = first.device if first is not None else torch.device("cpu")
        device = torch.device(device) if device is not None else home
        try:  # run on `device`, then leave the encoder where it was
            feats = embed(encoder.to(device), images, batch_size=batch_size, device=device, fast=fast, progress=progress, desc=desc)
        finally:
            encoder.to(home)
    elif hasattr(encoder, "embed"):
        parts = [encoder.embed(images[s : s + batch_size]) for s in range(0, len(images), batch_size)]
        feats = torch.cat(parts) if parts else torch.zeros(0, int(getattr(encoder, "feature_dim", 0)))
    else:
        raise TypeError(f"cannot extract features with {type(encoder).__name__}: need an nn.Module or .embed()")
    return feats.detach().float().cpu().contiguous()


def encoder_fingerprint(encoder: nn.Module, length: int = 16) -> str:
    """Short hex hash of the state_dict (names, dtypes, shapes, bytes), the spec and the class name."""
    h = hashlib.sha256()
    h.update(type(encoder).__name__.encode())
    spec = getattr(encoder, "spec", None)
    if spec is not None:
        spec_d = spec.to_dict() if hasattr(spec, "to_dict") else spec
        h.update(json.dumps(spec_d, sort_keys=True, default=str).encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


class FeatureCache:
    """Features on disk as `<dir>/<fingerprint>/<dataset>-<N>-<hash>.safetensors` (float32 N×D)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    def path(self, fingerprint: str, dataset: str, n: int) -> Path:
        tag = hashlib.sha256(f"{dataset}\0{n}".encode()).hexdigest()[:8]
        return self.directory / fingerprint / f"{_safe(dataset)}-{n}-{tag}.safetensors"

    def get(self, fingerprint: str, dataset: str, n: int) -> torch.Tensor | None:
        """Cached features or None (a file whose stored key differs counts as a miss)."""
        p = self.path(fingerprint, dataset, n)
        if p.exists():
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("format") == FORMAT and meta.get("fingerprint") == fingerprint and meta.get("dataset") == dataset:
                feats = load_file(str(p))["features"]
                if len(feats) == n:
                    self.hits += 1
                    return feats
        self.misses += 1
        return None

    def put(self, fingerprint: str, dataset: str, features: torch.Tensor) -> Path:
        """Write atomically (temp file + rename); returns the file path."""
        n = len(features)
        p = self.path(fingerprint, dataset, n)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        meta = {"format": FORMAT, "fingerprint": fingerprint, "dataset": dataset, "n": str(n)}
        save_file({"features": features.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)
        os.replace(tmp, p)
        return p

    def features(self, encoder: nn.Module, images, dataset: str | None = None, batch_size: int = 512,
                 device: torch.device | str | None = None, progress: bool = False) -> torch.Tensor:
        """Cached features of `images` (tensor or ImageSet; `dataset` defaults to ImageSet.name), else extract and store."""
        dataset = dataset or getattr(images, "name", None)
        if dataset is None:
            raise ValueError("FeatureCache.features needs a dataset name (pass dataset=... or an ImageSet)")
        n = len(getattr(images, "images", images))
        fp = encoder_fingerprint(encoder)
        feats = self.get(fp, dataset, n)
        if feats is None:
            feats = extract_features(encoder, images, batch_size=batch_size, device=device, progress=progress, desc=f"features {dataset}")
            self.put(fp, dataset, feats)
        return feats
