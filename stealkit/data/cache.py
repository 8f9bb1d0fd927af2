"""On-disk cache of decoded sets: `<cache>/<slug>/<split>-<size>px-<key>.safetensors` (images uint8
N×3×S×S, labels int64 N) plus a `.json` beside it (classes, source, key). Never pickled.

The key hashes the source's fingerprint (path + bytes + mtime, or a folder's file stats), the split
and the size, so a changed source file or another size is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from safetensors.torch import load_file, save_file

from stealkit.data.imageset import ImageSet

CACHE_VERSION = 1


class Source(Protocol):
    """Anything that can say what it is (for the key) and decode itself into an ImageSet."""

    kind: str

    def fingerprint(self) -> dict: ...

    def load(self, size: int, name: str) -> ImageSet: ...


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Explicit argument > env STEALKIT_CACHE > ~/.cache/stealkit."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("STEALKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stealkit"


def cache_key(source: Source, split: str, size: int) -> str:
    """sha256 over the source kind, its fingerprint, the split and the size."""
    blob = json.dumps(
        {"v": CACHE_VERSION, "kind": source.kind, "fp": source.fingerprint(), "split": split, "size": size},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:80] or "set"


def _paths(cache_dir: Path, name: str, split: str, size: int, key: str) -> tuple[Path, Path]:
    stem = cache_dir / _slug(name) / f"{_slug(split)}-{size}px-{key[:20]}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def read_cache(cache_dir: Path, name: str, split: str, size: int, key: str) -> ImageSet | None:
    """The cached set for this key, or None (missing, or written by another key)."""
    tensors_path, info_path = _paths(cache_dir, name, split, size, key)
    if not (tensors_path.is_file() and info_path.is_file()):
        return None
    try:
        info = json.loads(info_path.read_text())
        if info.get("key") != key:
            return None
        t = load_file(str(tensors_path))
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    meta = {"source": info.get("source"), "path": info.get("path"), "key": key, "cached": True}
    return ImageSet(t["images"], t["labels"], list(info["classes"]), info.get("name", f"{name}:{split}"), meta)


def write_cache(cache_dir: Path, name: str, split: str, size: int, key: str, data: ImageSet) -> Path:
    """Write atomically (temp file + rename) and drop older entries for the same name/split/size."""
    tensors_path, info_path = _paths(cache_dir, name, split, size, key)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    for old in tensors_path.parent.glob(f"{_slug(split)}-{size}px-*"):
        if old.stem != tensors_path.stem:
            old.unlink(missing_ok=True)
    info = {
        "name": data.name,
        "classes": list(data.classes),
        "source": data.meta.get("source"),
        "path": data.meta.get("path"),
        "key": key,
        "count": len(data),
        "shape": list(data.images.shape[1:]),
    }
    with tempfile.NamedTemporaryFile(dir=tensors_path.parent, suffix=".tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        save_file({"images": data.images.contiguous(), "labels": data.labels.contiguous()}, str(tmp_path))
        os.replace(tmp_path, tensors_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    info_tmp = info_path.with_suffix(".json.tmp")
    info_tmp.write_text(json.dumps(info, indent=1))
    os.replace(info_tmp, info_path)
    return tensors_path


def cached_load(source: Source, name: str, split: str, size: int, cache_dir=None) -> ImageSet:
    """Decode `source` once into uint8 N×3×size×size; later calls read the safetensors cache."""
    cdir = resolve_cache_dir(cache_dir)
    key = cache_key(source, split, size)
    hit = read_cache(cdir, name, split, size, key)
    if hit is not None:
        return hit
    data = source.load(size, f"{name}:{split}")
    data.meta.update(key=key, cached=False)
    try:
        write_cache(cdir, name, split, size, key, data)
    except OSError as exc:  # a read-only cache must not stop the run
        data.meta["cache_error"] = str(exc)
    return data


__all__ = ["Source", "resolve_cache_dir", "cache_key", "read_cache", "write_cache", "cached_load"]
