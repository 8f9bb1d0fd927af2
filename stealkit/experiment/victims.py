"""Victims for experiments: load a checkpoint, or pre-train one and cache it by its settings."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from stealkit.data import load_dataset, resolve_cache_dir
from stealkit.data.imageset import ImageSet
from stealkit.models.checkpoint import checkpoint_exists, load_encoder, read_sidecar, save_encoder
from stealkit.pretrain.config import DataSpec, PretrainConfig
from stealkit.pretrain.trainer import knn_monitor, pretrain


def spec_key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_data(spec: DataSpec, data_root: str | None) -> ImageSet:
    """DataSpec -> ImageSet (limit/fraction sampled reproducibly by spec.seed)."""
    data = load_dataset(spec.name, spec.split, root=spec.root or data_root, size=spec.size)
    n = spec.limit if spec.limit is not None else (round(spec.fraction * len(data)) if spec.fraction is not None else None)
    if n is not None and n < len(data):
        data = data.sample(n, seed=spec.seed, name=f"{spec.name}:{spec.split}[{n}]")
    return data


def victim_key(cfg: PretrainConfig) -> str:
    """Cache key of a pre-trained victim: the settings that change its weights. MoCo-only settings
    count for MoCo victims only (adding one must not orphan every cached SimCLR victim)."""
    skip = {"device", "knn_every", "checkpoint_every", "compile"}
    if cfg.method != "moco":
        skip |= {"moco_bn_splits"}
    return spec_key(cfg.model_dump(exclude=skip))


def get_victim(spec: dict, data_root: str | None, device: str, progress: bool = True, log=print):
    """spec: VictimSpec as dict -> (encoder, info) where info has dataset, dataset_size, checkpoint, seconds."""
    if spec.get("checkpoint"):
        path = Path(spec["checkpoint"])
        meta = read_sidecar(path)
        return load_encoder(path), {"checkpoint": str(path), "dataset": meta.get("dataset"), "dataset_size": meta.get("dataset_size"), "seconds": 0.0, "cached": True}
    cfg = PretrainConfig(**spec["pretrain"])
    if cfg.device == "auto" and device != "auto":
        cfg = cfg.model_copy(update={"device": device})
    key = victim_key(cfg)
    path = resolve_cache_dir() / "victims" / f"victim-{key}"
    if checkpoint_exists(path):
        meta = read_sidecar(path)
        log(f"victim {key}: cached at {path}.safetensors")
        return load_encoder(path), {"checkpoint": str(path) + ".safetensors", "dataset": meta.get("dataset"), "dataset_size": meta.get("dataset_size"), "seconds": meta.get("seconds", 0.0), "cached": True, "log": meta.get("log", [])}
    data = load_data(cfg.data, data_root)
    monitor = None
    if cfg.knn_data is not None:
        tr = load_data(cfg.knn_data, data_root)
        te = load_data(cfg.knn_data.model_copy(update={"split": "test", "limit": min(cfg.knn_data.limit or 10**9, 2000)}), data_root)
        monitor = knn_monitor(tr.images, tr.labels, te.images, te.labels, k=cfg.knn_k)
    log(f"victim {key}: pre-training {cfg.method} {cfg.arch} on {data.name} ({len(data)} images, {cfg.epochs} epochs)")
    t0 = time.perf_counter()
    encoder, train_log = pretrain(data.images, cfg, state_path=path.with_suffix(".state.pt"), monitor=monitor, progress=progress)
    seconds = time.perf_counter() - t0
    save_encoder(encoder, path, train_config=cfg.model_dump(), dataset=data.name, dataset_size=len(data), seed=cfg.seed, seconds=seconds, log=train_log)
    path.with_suffix(".state.pt").unlink(missing_ok=True)
    return encoder, {"checkpoint": str(path) + ".safetensors", "dataset": data.name, "dataset_size": len(data), "seconds": seconds, "cached": False, "log": train_log}
