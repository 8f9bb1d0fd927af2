"""Registered dataset names and the one entry point, `load_dataset`.

Sources for a registered name, in order: `<root>/<name>/<split>.tar.gz` (packed ImageFolder),
`<root>/<name>/<split>/<class>/<file>` (plain ImageFolder), torchvision's class with root `<root>`.
Ad-hoc forms: "folder:/path" and "archive:/path/x.tar.gz". Embedded: "digits", "synthetic".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stealkit.data.archives import ArchiveSource, FolderSource
from stealkit.data.cache import cached_load
from stealkit.data.embedded import EMBEDDED
from stealkit.data.imageset import ImageSet
from stealkit.data.torchvision_sets import TORCHVISION, TorchvisionSource


class DatasetNotFound(FileNotFoundError):
    """No source for a dataset; the message names every place looked and how to provide one."""


class UnknownDataset(KeyError):
    """A name that is neither registered nor a "folder:"/"archive:" form."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset: description, known splits and where it can come from."""

    name: str
    description: str
    splits: tuple[str, ...]
    sources: tuple[str, ...]  # subset of ("archive", "folder", "torchvision", "embedded")


def _files(name: str, description: str, splits: tuple[str, ...]) -> DatasetInfo:
    tv = ("torchvision",) if name in TORCHVISION else ()
    return DatasetInfo(name, description, splits, ("archive", "folder", *tv))


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        _files("cifar10", "CIFAR-10, 32×32 RGB, 10 classes (50k/10k)", ("train", "test")),
        _files("cifar100", "CIFAR-100, 32×32 RGB, 100 classes (50k/10k)", ("train", "test")),
        _files("stl10", "STL-10, 96×96 RGB, 10 classes (5k/8k, 100k unlabeled)", ("train", "test", "unlabeled", "train+unlabeled")),
        _files("mnist", "MNIST, 28×28 grey digits, 10 classes (60k/10k)", ("train", "test")),
        _files("fashion_mnist", "Fashion-MNIST, 28×28 grey, 10 classes (60k/10k)", ("train", "test")),
        _files("svhn", "SVHN, 32×32 RGB house numbers, 10 classes (73k/26k)", ("train", "test", "extra")),
        _files("gtsrb", "GTSRB traffic signs, 43 classes (39k/12.6k)", ("train", "test")),
        _files("food101", "Food-101, 101 classes (75.75k/25.25k)", ("train", "test")),
        _files("tiny_imagenet32", "Tiny-ImageNet-200 at 32×32 (archive only), 200 classes", ("train", "val", "test_unlabeled")),
        DatasetInfo("digits", "scikit-learn handwritten digits, 8×8 grey, 10 classes (1,347/450), embedded", EMBEDDED["digits"][1], ("embedded",)),
        DatasetInfo("synthetic", "generated coloured shapes/textures, 10 classes (5,000/2,000), embedded", EMBEDDED["synthetic"][1], ("embedded",)),
    )
}


def list_datasets() -> list[str]:
    """Registered names (CLI choices, test parametrisation)."""
    return list(DATASETS)


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """Explicit argument > env STEALKIT_DATA > ./data."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("STEALKIT_DATA")
    return Path(env).expanduser() if env else Path("data")


def _how_to(name: str, split: str) -> str:
    return (
        f"Provide it with --data-root DIR (or STEALKIT_DATA=DIR, or root=DIR) pointing to a folder holding "
        f"{name}/{split}.tar.gz or {name}/{split}/<class>/<file>"
        + (", or allow torchvision to fetch it (--download / download=True)" if name in TORCHVISION else "")
        + "."
    )


def find_source(name: str, split: str = "train", root=None, download: bool | None = None):
    """The first available source for a registered file-backed name, or raise DatasetNotFound.

    download: True/None let torchvision fetch a missing set (None turns a network failure into
    DatasetNotFound); False never downloads.
    """
    root = resolve_data_root(root)
    archive, folder = root / name / f"{split}.tar.gz", root / name / split
    looked = [f"archive {archive}", f"ImageFolder {folder}/<class>/<file>"]
    if archive.is_file():
        return ArchiveSource(archive, split)
    if folder.is_dir():
        return FolderSource(folder)
    problem = ""
    if name in TORCHVISION:
        if split not in TORCHVISION[name].splits:
            problem = f" (torchvision's {TORCHVISION[name].cls} has no split {split!r}; it has {sorted(TORCHVISION[name].splits)})"
        else:
            tv = TorchvisionSource(name, root, split, download=False)
            looked.append(f"torchvision {TORCHVISION[name].cls} files {tv.marker}")
            if tv.present():
                return tv
            if download is False:
                problem = " (download disabled)"
            else:
                tv.download = True
                try:
                    tv.build()
                except Exception as exc:  # network down, bad checksum, ...
                    problem = f" (download failed: {type(exc).__name__}: {exc})"
                else:
                    tv.download = False
                    return tv
    places = "\n  - ".join(looked)
    raise DatasetNotFound(
        f"dataset {name!r} split {split!r} not found{problem}. Looked in:\n  - {places}\n{_how_to(name, split)}"
        f"\nKnown splits of {name}: {', '.join(DATASETS[name].splits)}."
    )


_SPLIT_NAMES = {"train", "test", "val", "valid", "validation", "unlabeled", "test_unlabeled"}


def _adhoc_source(name: str, split: str):
    kind, _, raw = name.partition(":")
    path = Path(raw).expanduser()
    if kind == "archive":
        if not path.is_file():
            raise DatasetNotFound(f"archive {path} not found (from {name!r}); give an existing <...>.tar.gz path")
        return ArchiveSource(path, split)
    if not path.is_dir():
        raise DatasetNotFound(f"ImageFolder directory {path} not found (from {name!r}); expected <dir>/<class>/<file>")
    if (path / split).is_dir():
        return FolderSource(path / split)
    split_dirs = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name in _SPLIT_NAMES)
    if split_dirs:
        raise DatasetNotFound(f"{path} has split folders {split_dirs} but no {split!r} (from {name!r})")
    if split != "train":  # a flat <dir>/<class>/<file> folder is one set: never hand its images out as held-out ones
        raise DatasetNotFound(f"{path} is a flat ImageFolder (<class>/<file>, no split folders): it is one set, split 'train'. "
                              f"For a {split!r} split give <dir>/{split}/<class>/<file> (or another folder as {split!r})")
    return FolderSource(path)


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    size: int = 32,
    download: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ImageSet:
    """Load a dataset as uint8 N×3×size×size images + int64 N labels (cached after the first decode).

    name: a registered name (see `list_datasets()`), "folder:/path" or "archive:/path/x.tar.gz".
    root: data root (else STEALKIT_DATA, else ./data). cache_dir: else STEALKIT_CACHE, else ~/.cache/stealkit.
    """
    if name.startswith(("folder:", "archive:")):
        source = _adhoc_source(name, split)
        return cached_load(source, name, split, size, cache_dir)
    if name not in DATASETS:
        raise UnknownDataset(f"unknown dataset {name!r}; registered: {', '.join(DATASETS)} (or folder:/path, archive:/path.tar.gz)")
    if "embedded" in DATASETS[name].sources:
        loader, _ = EMBEDDED[name]
        return loader(split, size)
    source = find_source(name, split, root, download)
    return cached_load(source, name, split, size, cache_dir)
