"""ImageFolder trees, packed (`<split>.tar.gz`, members `<split>/<class>/<file>`) or plain
(`<dir>/<class>/<file>`), decoded (torchvision.io, else PIL) into uint8 N×3×size×size (grey repeated to 3 channels).

Order is deterministic: classes sorted by name, files sorted by name; label = index of the class.
"""

from __future__ import annotations

import io
import mmap
import multiprocessing as mp
import os
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

try:  # fast path (libjpeg-turbo/libpng/libwebp); deprecated in torchvision 0.29, so PIL stays the fallback
    from torchvision.io import ImageReadMode, decode_image, read_file
except ImportError:  # pragma: no cover
    decode_image = None

from stealkit.data.imageset import ImageSet, resize_uint8

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".gif"}
)
_MIN_POOL_ITEMS = 4096  # below this a process pool costs more than it saves


def _is_image(parts: tuple[str, ...]) -> bool:
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return PurePosixPath(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS


# ---------------------------------------------------------------- decoding


def _box_reduce(a: np.ndarray, size: int) -> np.ndarray:
    """H×W×3 with min side >= 4·size -> box-averaged by an integer factor to about 2·size (bounds memory)."""
    factor = min(a.shape[:2]) // (2 * size)
    if factor < 2:
        return a
    h, w = a.shape[0] // factor * factor, a.shape[1] // factor * factor
    blocks = a[:h, :w].reshape(h // factor, factor, w // factor, factor, a.shape[2])
    return np.rint(blocks.mean(axis=(1, 3), dtype=np.float32)).astype(np.uint8)


def _decode_one(item: bytes | str, size: int) -> np.ndarray:
    """One encoded image (bytes or a path) -> H×W×3 uint8, grey repeated to 3 channels.

    JPEG/PNG/WebP go through torchvision.io (libjpeg-turbo/libpng/libwebp, pixel-identical to
    PIL and ~3× faster); anything else (PPM, BMP, TIFF, ...) through PIL.
    """
    arr = None
    try:
        if decode_image is None:
            raise RuntimeError("torchvision.io unavailable")
        raw = torch.frombuffer(bytearray(item), dtype=torch.uint8) if isinstance(item, bytes) else read_file(item)
        t = decode_image(raw, mode=ImageReadMode.RGB)
        if t.dtype == torch.uint8:
            arr = t.permute(1, 2, 0).numpy()
    except RuntimeError:
        arr = None
    if arr is None:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as im:
            arr = np.asarray(im.convert("RGB"))  # "L" -> RGB repeats the grey channel
    return _box_reduce(arr, size) if min(arr.shape[:2]) >= 4 * size else arr


def _worker_init() -> None:
    torch.set_num_threads(1)  # as DataLoader workers do: no intra-op threads in forked children


def _decode_chunk(args: tuple[list, int]) -> np.ndarray | list[np.ndarray]:
    """A chunk of encoded images -> K×H×W×3 array when all share a shape, else a list of H×W×3."""
    items, size = args
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision", category=DeprecationWarning)
        arrays = [_decode_one(it, size) for it in items]
    if arrays and len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    return arrays


def _to_tensor(decoded: np.ndarray | list[np.ndarray], size: int) -> torch.Tensor:
    """Decoded chunk -> uint8 K×3×size×size (resized with `resize_uint8`, grouped by shape)."""
    if isinstance(decoded, np.ndarray):
        return resize_uint8(torch.from_numpy(decoded).permute(0, 3, 1, 2).contiguous(), size)
    out = torch.empty((len(decoded), 3, size, size), dtype=torch.uint8)
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(decoded):
        groups.setdefault(a.shape, []).append(i)
    for idx in groups.values():
        batch = torch.from_numpy(np.stack([decoded[i] for i in idx])).permute(0, 3, 1, 2).contiguous()
        out[idx] = resize_uint8(batch, size)
    return out


_FORKED: dict = {}  # items and output buffer, set just before forking so workers inherit them


def _decode_range(bounds: tuple[int, int]) -> int:
    """Worker: decode items[a:b] and write them straight into the shared output buffer."""
    a, b = bounds
    items, out, size = _FORKED["items"], _FORKED["out"], _FORKED["size"]
    out[a:b] = _to_tensor(_decode_chunk((items[a:b], size)), size)
    return b - a


def decode_images(items: list[bytes | str], size: int, workers: int | None = None) -> torch.Tensor:
    """Encoded images (bytes or file paths) -> uint8 N×3×size×size, in input order.

    Large lists are split over a fork pool of `workers` (default os.cpu_count()) that inherit the
    inputs and write into one anonymous shared mmap (no pickling of images, no /dev/shm).
    """
    n = len(items)
    workers = workers or os.cpu_count() or 1
    n_chunks = max(1, min(workers * 8, n // 512))
    bounds = np.linspace(0, n, n_chunks + 1).astype(int).tolist()
    ranges = list(zip(bounds[:-1], bounds[1:]))
    can_fork = "fork" in mp.get_all_start_methods() and not mp.current_process().daemon
    if workers > 1 and n >= _MIN_POOL_ITEMS and can_fork:
        nbytes = n * 3 * size * size
        buffer = mmap.mmap(-1, nbytes)  # MAP_SHARED | MAP_ANONYMOUS: shared with forked children
        shared = torch.frombuffer(buffer, dtype=torch.uint8).view(n, 3, size, size)
        _FORKED.update(items=items, out=shared, size=size)
        try:
            with mp.get_context("fork").Pool(min(workers, n_chunks), initializer=_worker_init) as pool:
                done = sum(pool.imap_unordered(_decode_range, ranges))
            assert done == n
            out = shared.clone()
        finally:
            _FORKED.clear()
            del shared
            buffer.close()
        return out
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    for a, b in ranges:
        out[a:b] = _to_tensor(_decode_chunk((items[a:b], size)), size)
    return out


# ---------------------------------------------------------------- listing


@dataclass
class _Listing:
    """Members of an ImageFolder tree: sorted (class, file) keys and the matching payloads."""

    keys: list[tuple[str, str]] = field(default_factory=list)
    payloads: list[bytes | str] = field(default_factory=list)

    def to_imageset(self, size: int, name: str, meta: dict) -> ImageSet:
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        classes = sorted({c for c, _ in self.keys})
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[self.keys[i][0]] for i in order], dtype=torch.int64)
        images = decode_images([self.payloads[i] for i in order], size)
        return ImageSet(images, labels, classes, name, meta)


def _select_split(entries: list[tuple[tuple[str, ...], object]], split: str | None, where: str):
    """Entries (path parts, payload) -> [(class, file, payload)], dropping a leading split folder."""
    depths = {len(p) for p, _ in entries}
    if not entries:
        raise FileNotFoundError(f"{where}: no image files (<class>/<file> or <split>/<class>/<file>) found")
    if depths == {2}:
        return [(p[0], p[1], x) for p, x in entries]
    if depths != {3}:
        raise ValueError(f"{where}: expected members <split>/<class>/<file> or <class>/<file>, got depths {sorted(depths)}")
    tops = sorted({p[0] for p, _ in entries})
    if split in tops:
        keep = split
    elif len(tops) == 1:
        keep = tops[0]
    else:
        raise FileNotFoundError(f"{where}: has splits {tops}, not {split!r}")
    return [(p[1], p[2], x) for p, x in entries if p[0] == keep]


def read_archive(path: str | Path, split: str | None = None) -> _Listing:
    """Read every image member of a tar(.gz) into memory (one sequential pass)."""
    entries = []
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            parts = PurePosixPath(m.name).parts
            parts = tuple(p for p in parts if p not in (".", ""))
            if parts and parts[0] == "/":
                parts = parts[1:]
            if len(parts) < 2 or not _is_image(parts):
                continue
            f = tf.extractfile(m)
            entries.append((parts, f.read() if f else b""))
    listing = _Listing()
    for cls, fname, data in _select_split(entries, split, str(path)):
        listing.keys.append((cls, fname))
        listing.payloads.append(data)
    return listing


def scan_folder(path: str | Path) -> tuple[_Listing, dict]:
    """List `<path>/<class>/**/<file>` images; returns the listing and a fingerprint (count, bytes, max mtime)."""
    path = Path(path)
    listing = _Listing()
    count = total = newest = 0
    for cls_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for dirpath, dirnames, filenames in os.walk(cls_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(cls_dir)
            for fname in sorted(filenames):
                if not _is_image((fname,)):
                    continue
                full = os.path.join(dirpath, fname)
                st = os.stat(full)
                count, total, newest = count + 1, total + st.st_size, max(newest, st.st_mtime_ns)
                listing.keys.append((cls_dir.name, str(rel / fname)))
                listing.payloads.append(full)
    if not listing.keys:
        raise FileNotFoundError(f"{path}: no image files in <class>/<file> subfolders")
    return listing, {"files": count, "bytes": total, "mtime_ns": newest}


# ---------------------------------------------------------------- sources (see cache.cached_load)


@dataclass
class ArchiveSource:
    """A packed ImageFolder archive `<...>.tar.gz` (members `<split>/<class>/<file>` or `<class>/<file>`)."""

    path: Path
    split: str | None = None
    kind: str = "archive"

    def fingerprint(self) -> dict:
        st = self.path.stat()
        return {"path": str(self.path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "split": self.split}

    def load(self, size: int, name: str) -> ImageSet:
        return read_archive(self.path, self.split).to_imageset(size, name, {"source": self.kind, "path": str(self.path)})


@dataclass
class FolderSource:
    """A plain ImageFolder directory `<path>/<class>/<file>`."""

    path: Path
    kind: str = "folder"
    _scan: tuple | None = field(default=None, repr=False)

    def _scanned(self):
        if self._scan is None:
            self._scan = scan_folder(self.path)
        return self._scan

    def fingerprint(self) -> dict:
        return {"path": str(self.path.resolve()), **self._scanned()[1]}

    def load(self, size: int, name: str) -> ImageSet:
        return self._scanned()[0].to_imageset(size, name, {"source": self.kind, "path": str(self.path)})
