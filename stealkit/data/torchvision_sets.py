"""torchvision's own dataset classes, loaded from a root (downloading when allowed) into uint8
N×3×size×size via the same decode path as the archives."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stealkit.data.archives import decode_images
from stealkit.data.imageset import ImageSet, resize_uint8, to_three_channels

_TRAIN_TEST = {"train": {"train": True}, "test": {"train": False}}


def _splits(*names: str) -> dict[str, dict]:
    return {s: {"split": s} for s in names}


@dataclass(frozen=True)
class TVSpec:
    """How to build torchvision's class for one of our names.

    cls: attribute of torchvision.datasets; splits: our split -> constructor kwargs;
    files: split -> path (relative to root) whose presence means "downloaded";
    classes: names to use where torchvision's class has no `.classes`.
    """

    cls: str
    splits: dict[str, dict]
    files: dict[str, str]
    classes: tuple[str, ...] | None = None


TORCHVISION: dict[str, TVSpec] = {
    "cifar10": TVSpec("CIFAR10", _TRAIN_TEST, {s: "cifar-10-batches-py" for s in _TRAIN_TEST}),
    "cifar100": TVSpec("CIFAR100", _TRAIN_TEST, {s: "cifar-100-python" for s in _TRAIN_TEST}),
    "stl10": TVSpec(
        "STL10",
        _splits("train", "test", "unlabeled", "train+unlabeled"),
        {s: "stl10_binary" for s in ("train", "test", "unlabeled", "train+unlabeled")},
    ),
    "mnist": TVSpec("MNIST", _TRAIN_TEST, {s: "MNIST/raw" for s in _TRAIN_TEST}),
    "fashion_mnist": TVSpec("FashionMNIST", _TRAIN_TEST, {s: "FashionMNIST/raw" for s in _TRAIN_TEST}),
    "svhn": TVSpec(
        "SVHN",
        _splits("train", "test", "extra"),
        {s: f"{s}_32x32.mat" for s in ("train", "test", "extra")},
        tuple(str(i) for i in range(10)),
    ),
    "gtsrb": TVSpec(
        "GTSRB",
        _splits("train", "test"),
        {"train": "gtsrb/GTSRB/Training", "test": "gtsrb/GTSRB/Final_Test"},
        tuple(f"{i:05d}" for i in range(43)),
    ),
    "food101": TVSpec("Food101", _splits("train", "test"), {s: "food-101" for s in ("train", "test")}),
}


def _fingerprint_path(path: Path) -> dict:
    """path, file count, total bytes and newest mtime of a file or a tree."""
    if path.is_file():
        st = path.stat()
        return {"path": str(path.resolve()), "files": 1, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    count = total = newest = 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            st = os.stat(os.path.join(dirpath, f))
            count, total, newest = count + 1, total + st.st_size, max(newest, st.st_mtime_ns)
    return {"path": str(path.resolve()), "files": count, "bytes": total, "mtime_ns": newest}


def _as_nchw(data) -> torch.Tensor:
    """CIFAR N×H×W×3, MNIST N×H×W, SVHN/STL10 N×3×H×W (numpy or torch) -> uint8 N×3×H×W."""
    t = torch.as_tensor(np.asarray(data)).to(torch.uint8)
    if t.ndim == 3:
        return to_three_channels(t)
    if t.shape[1] not in (1, 3) and t.shape[-1] in (1, 3):
        t = t.permute(0, 3, 1, 2)
    return to_three_channels(t.contiguous())


def dataset_to_imageset(ds, size: int, name: str, classes: list[str] | None = None) -> ImageSet:
    """A torchvision dataset object -> ImageSet (array-backed sets directly, file-backed via PIL)."""
    classes = list(getattr(ds, "classes", None) or classes or [])
    if hasattr(ds, "_samples"):  # GTSRB: [(path, label)]
        paths, labels = [str(p) for p, _ in ds._samples], [int(y) for _, y in ds._samples]
        images = decode_images(paths, size)
    elif hasattr(ds, "_image_files"):  # Food101
        paths, labels = [str(p) for p in ds._image_files], list(ds._labels)
        images = decode_images(paths, size)
    elif hasattr(ds, "data"):
        images = resize_uint8(_as_nchw(ds.data), size)
        labels = getattr(ds, "targets", None)
        labels = getattr(ds, "labels", None) if labels is None else labels
    else:
        raise TypeError(f"{type(ds).__name__}: don't know how to read its images")
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if not classes:
        classes = [str(i) for i in range(int(labels.max()) + 1)] if len(labels) else []
    return ImageSet(images, labels, classes, name)


@dataclass
class TorchvisionSource:
    """torchvision.datasets.<cls>(root, ...) for one of our registered names."""

    name: str
    root: Path
    split: str
    download: bool = False
    kind: str = "torchvision"
    _files: Path = field(init=False, repr=False)

    def __post_init__(self) -> None:
        spec = TORCHVISION[self.name]
        if self.split not in spec.splits:
            raise ValueError(f"{self.name}: torchvision has splits {sorted(spec.splits)}, not {self.split!r}")
        self._files = self.root / spec.files[self.split]

    @property
    def marker(self) -> Path:
        """The file or folder whose presence means the set is already under root."""
        return self._files

    def present(self) -> bool:
        return self._files.exists()

    def build(self):
        """Construct torchvision's dataset object (downloads if `download`)."""
        import torchvision.datasets as tvd

        spec = TORCHVISION[self.name]
        if self.download:
            self.root.mkdir(parents=True, exist_ok=True)
        return getattr(tvd, spec.cls)(root=str(self.root), download=self.download, **spec.splits[self.split])

    def fingerprint(self) -> dict:
        return {"cls": TORCHVISION[self.name].cls, **_fingerprint_path(self._files)}

    def load(self, size: int, name: str) -> ImageSet:
        spec = TORCHVISION[self.name]
        data = dataset_to_imageset(self.build(), size, name, list(spec.classes) if spec.classes else None)
        data.meta.update(source=self.kind, path=str(self.root))
        return data
