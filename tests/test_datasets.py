"""Datasets layer: shared archives vs their manifests, ImageFolder forms, cache, embedded sets, errors, CLI."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared
from PIL import Image

from stealkit.data import (
    DATASETS,
    DatasetNotFound,
    UnknownDataset,
    list_datasets,
    load_dataset,
    make_synthetic,
    resize_uint8,
    resolve_cache_dir,
    resolve_data_root,
)
from stealkit.data.embedded import digits_split_indices

PROJECT_NAMES = {
    "cifar10", "cifar100", "stl10", "mnist", "fashion_mnist", "svhn", "gtsrb", "food101",
    "tiny_imagenet32", "digits", "synthetic",
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module, so a set decoded by one test is a hit for the next."""
    return tmp_path_factory.mktemp("stealkit_cache")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, cache):
    monkeypatch.delenv("STEALKIT_DATA", raising=False)
    monkeypatch.setenv("STEALKIT_CACHE", str(cache))


def _manifest(root, name):
    return json.loads((root / name / "MANIFEST.json").read_text())


def _encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _tiny_tree(seed: int = 0) -> dict[str, bytes]:
    """{"<class>/<file>": bytes}: 3 classes, unsorted insertion, mixed sizes, a grey PNG, a PPM (PIL-only
    format) and a large JPEG (box-reduced before the resize)."""
    rng = np.random.default_rng(seed)
    files = {}
    for cls, n in (("zebra", 2), ("ant", 3), ("moth", 1)):
        for i in reversed(range(n)):
            shape = (20, 24, 3) if i % 2 else (16, 16, 3)
            files[f"{cls}/{i:02d}.png"] = _encode(rng.integers(0, 256, shape, dtype=np.uint8))
    files["moth/grey.png"] = _encode(rng.integers(0, 256, (12, 12), dtype=np.uint8))
    files["zebra/big.jpg"] = _encode(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8), "JPEG")
    files["ant/sign.ppm"] = _encode(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), "PPM")
    return files


def _write_tar(path, files: dict[str, bytes], prefix: str = "") -> None:
    with tarfile.open(path, "w:gz") as tf:
        for member, data in files.items():
            info = tarfile.TarInfo(prefix + member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _write_dir(root, files: dict[str, bytes]) -> None:
    for member, data in files.items():
        (root / member).parent.mkdir(parents=True, exist_ok=True)
        (root / member).write_bytes(data)


# ---------------------------------------------------------------- registry and roots


def test_registry_has_project_names():
    assert PROJECT_NAMES <= set(list_datasets())
    assert list_datasets() == list(DATASETS)
    assert DATASETS["tiny_imagenet32"].splits == ("train", "val", "test_unlabeled")
    assert "torchvision" not in DATASETS["tiny_imagenet32"].sources
    assert set(DATASETS["stl10"].splits) == {"train", "test", "unlabeled", "train+unlabeled"}


def test_roots_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("STEALKIT_CACHE")
    assert resolve_data_root(None) == Path("data")
    assert resolve_cache_dir(None) == Path.home() / ".cache" / "stealkit"
    monkeypatch.setenv("STEALKIT_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "envc"))
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_cache_dir(None) == tmp_path / "envc"
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_cache_dir(tmp_path / "argc") == tmp_path / "argc"


# ---------------------------------------------------------------- shared archives vs MANIFEST.json


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name,split",
    [("cifar10", "test"), ("mnist", "test"), ("gtsrb", "test"), ("tiny_imagenet32", "val"), ("cifar10", "train")],
)
def test_shared_archive_matches_manifest(name, split):
    root = require_shared(name)
    expected = _manifest(root, name)["splits"][split]
    t0 = time.perf_counter()
    data = load_dataset(name, split, root=root)
    elapsed = time.perf_counter() - t0
    assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
    assert tuple(data.images.shape) == (expected["num_images"], 3, 32, 32)
    assert data.classes == sorted(expected["per_class"])
    assert data.num_classes == expected["num_classes"]
    counts = torch.bincount(data.labels, minlength=data.num_classes).tolist()
    assert dict(zip(data.classes, counts)) == expected["per_class"]
    assert torch.all(data.labels[1:] >= data.labels[:-1]), "order: sorted by class, then file"
    assert data.meta["source"] == "archive"
    assert elapsed < 60, f"decoding {name}:{split} took {elapsed:.1f}s"


@pytest.mark.shared_data
def test_mnist_grey_to_three_equal_channels_and_resized():
    root = require_shared("mnist")
    data = load_dataset("mnist", "test", root=root)
    assert data.images.shape[1:] == (3, 32, 32)
    assert torch.equal(data.images[:, 0], data.images[:, 1]) and torch.equal(data.images[:, 0], data.images[:, 2])
    # independent reference: first file of class "0" decoded by PIL, resized 28 -> 32 with resize_uint8
    with tarfile.open(root / "mnist" / "test.tar.gz") as tf:
        first = min(m.name for m in tf.getmembers() if m.isfile() and m.name.startswith("test/0/"))
        grey = np.array(Image.open(io.BytesIO(tf.extractfile(first).read())))
    assert grey.shape == (28, 28)
    ref = resize_uint8(torch.from_numpy(grey)[None, None], 32)[0, 0]
    assert torch.equal(data.images[0, 0], ref)


@pytest.mark.shared_data
def test_other_size_and_cache_hit_on_shared_archive(cache):
    root = require_shared("mnist")
    small = load_dataset("mnist", "test", root=root, size=16)
    assert small.images.shape[1:] == (3, 16, 16)
    again = load_dataset("mnist", "test", root=root, size=16)
    assert again.meta["cached"] is True and torch.equal(small.images, again.images)


# ---------------------------------------------------------------- cache


def test_cache_hit_identical_and_invalidated_when_source_changes(tmp_path):
    cache_dir = tmp_path / "cache"
    archive = tmp_path / "tiny.tar.gz"
    _write_tar(archive, _tiny_tree(0), prefix="train/")
    first = load_dataset(f"archive:{archive}", "train", cache_dir=cache_dir)
    assert first.meta["cached"] is False
    assert first.classes == ["ant", "moth", "zebra"]
    assert first.labels.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert first.images.shape == (9, 3, 32, 32)
    ppm = np.array(Image.open(io.BytesIO(_tiny_tree(0)["ant/sign.ppm"])))  # sorted last in "ant"
    ref = resize_uint8(torch.from_numpy(ppm).permute(2, 0, 1)[None].contiguous(), 32)[0]
    assert torch.equal(first.images[3], ref)
    assert list(cache_dir.rglob("*.safetensors")) and list(cache_dir.rglob("*.json"))
    assert not list(cache_dir.rglob("*.pkl")) and not list(cache_dir.rglob("*.pt"))

    hit = load_dataset(f"archive:{archive}", "train", cache_dir=cache_dir)
    assert hit.meta["cached"] is True and hit.meta["key"] == first.meta["key"]
    assert torch.equal(hit.images, first.images) and torch.equal(hit.labels, first.labels)
    assert hit.classes == first.classes

    other_size = load_dataset(f"archive:{archive}", "train", size=24, cache_dir=cache_dir)
    assert other_size.meta["cached"] is False and other_size.images.shape[-1] == 24

    _write_tar(archive, _tiny_tree(1), prefix="train/")  # new content, new size/mtime
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = load_dataset(f"archive:{archive}", "train", cache_dir=cache_dir)
    assert changed.meta["cached"] is False and changed.meta["key"] != first.meta["key"]
    assert not torch.equal(changed.images, first.images)
    assert len(list(cache_dir.rglob("train-32px-*.safetensors"))) == 1, "stale entry removed"


# ---------------------------------------------------------------- ImageFolder forms


def test_plain_imagefolder_and_folder_form_match_archive(tmp_path):
    files = _tiny_tree(2)
    root = tmp_path / "root"
    _write_dir(root / "cifar10" / "test", files)  # registered name, plain ImageFolder split dir
    _write_tar(tmp_path / "same.tar.gz", files, prefix="test/")

    from_dir = load_dataset("cifar10", "test", root=root, download=False)
    assert from_dir.meta["source"] == "folder"
    from_archive = load_dataset(f"archive:{tmp_path / 'same.tar.gz'}", "test")
    assert torch.equal(from_dir.images, from_archive.images)
    assert torch.equal(from_dir.labels, from_archive.labels) and from_dir.classes == from_archive.classes

    with_split = load_dataset(f"folder:{root / 'cifar10'}", "test")  # split subdir used when present
    no_split = load_dataset(f"folder:{root / 'cifar10' / 'test'}", "train")  # a flat folder is one set: split 'train'
    with pytest.raises(DatasetNotFound, match="flat ImageFolder"):  # never handed out as a held-out split
        load_dataset(f"folder:{root / 'cifar10' / 'test'}", "test")
    with pytest.raises(DatasetNotFound, match="no 'val'"):
        load_dataset(f"folder:{root / 'cifar10'}", "val")  # split folders there, but not this one
    for other in (with_split, no_split):
        assert torch.equal(other.images, from_dir.images) and torch.equal(other.labels, from_dir.labels)

    # grey file in class "moth" is repeated to 3 equal channels
    grey_index = from_dir.classes.index("moth")
    moth = from_dir.images[from_dir.labels == grey_index]
    assert any(torch.equal(im[0], im[1]) and torch.equal(im[1], im[2]) for im in moth)


def test_archive_with_several_splits_selects_one(tmp_path):
    archive = tmp_path / "two.tar.gz"
    tree = {**{f"train/{k}": v for k, v in _tiny_tree(0).items()}, **{f"test/{k}": v for k, v in _tiny_tree(1).items()}}
    _write_tar(archive, tree)
    train = load_dataset(f"archive:{archive}", "train")
    test = load_dataset(f"archive:{archive}", "test")
    assert len(train) == len(test) == 9 and not torch.equal(train.images, test.images)
    with pytest.raises(FileNotFoundError, match="val"):
        load_dataset(f"archive:{archive}", "val")


def _write_idx_mnist(raw, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny MNIST idx files (the raw layout torchvision reads) for train and t10k; returns t10k data."""
    import struct

    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True)
    for prefix, n in (("train", 4), ("t10k", 5)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return images, labels


def test_torchvision_source_used_after_archive_and_folder(tmp_path):
    images, labels = _write_idx_mnist(tmp_path / "MNIST" / "raw")
    data = load_dataset("mnist", "test", root=tmp_path, download=False)
    assert data.meta["source"] == "torchvision" and len(data) == 5
    assert data.labels.tolist() == labels.tolist()
    ref = resize_uint8(torch.from_numpy(images)[:, None], 32)[:, 0]
    assert torch.equal(data.images[:, 0], ref) and torch.equal(data.images[:, 2], ref)
    assert load_dataset("mnist", "test", root=tmp_path, download=False).meta["cached"] is True

    _write_dir(tmp_path / "mnist" / "test", _tiny_tree(0))  # a plain ImageFolder now takes precedence
    assert load_dataset("mnist", "test", root=tmp_path).meta["source"] == "folder"
    _write_tar(tmp_path / "mnist" / "test.tar.gz", _tiny_tree(0), prefix="test/")  # and an archive before it
    assert load_dataset("mnist", "test", root=tmp_path).meta["source"] == "archive"


# ---------------------------------------------------------------- embedded


def test_digits_matches_sklearn():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = load_dataset("digits", "train", size=8), load_dataset("digits", "test", size=8)
    assert (len(train), len(test)) == (1347, 450)
    idx_train, idx_test = digits_split_indices("train"), digits_split_indices("test")
    assert set(idx_train).isdisjoint(idx_test) and len(set(idx_train) | set(idx_test)) == 1797
    assert train.labels.tolist() == bunch.target[idx_train].tolist()
    assert test.labels.tolist() == bunch.target[idx_test].tolist()
    expected = np.rint(bunch.images[idx_test] * 255 / 16).astype(np.uint8)  # 0..16 -> 0..255
    assert np.array_equal(test.images[:, 1].numpy(), expected)

    # upscaled: compare against PIL's own bilinear resize of sklearn's array
    big = load_dataset("digits", "test", size=32)
    assert big.images.shape == (450, 3, 32, 32)
    assert torch.equal(big.images[:, 0], big.images[:, 2])
    for i in (0, 17, 449):
        ref = np.asarray(Image.fromarray(expected[i]).resize((32, 32), Image.BILINEAR)).astype(int)
        assert np.abs(big.images[i, 0].numpy().astype(int) - ref).max() <= 2


def test_synthetic_deterministic_balanced():
    train = load_dataset("synthetic", "train")
    test = load_dataset("synthetic", "test")
    assert train.images.shape == (5000, 3, 32, 32) and test.images.shape == (2000, 3, 32, 32)
    assert train.num_classes == 10 and torch.bincount(train.labels).tolist() == [500] * 10
    assert torch.equal(load_dataset("synthetic", "test").images, test.images)
    assert not torch.equal(train.images[:2000], test.images)
    assert torch.equal(make_synthetic(3, seed=5).images, make_synthetic(3, seed=5).images)
    assert not torch.equal(make_synthetic(3, seed=5).images, make_synthetic(3, seed=6).images)
    assert train.images.float().std() > 40  # coloured, not blank
    assert load_dataset("synthetic", "test", size=64).images.shape == (2000, 3, 64, 64)


# ---------------------------------------------------------------- errors


def test_missing_dataset_names_every_place_looked(tmp_path):
    with pytest.raises(DatasetNotFound) as info:
        load_dataset("cifar100", "test", root=tmp_path, download=False)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    for needle in (
        str(tmp_path / "cifar100" / "test.tar.gz"),
        str(tmp_path / "cifar100" / "test"),
        str(tmp_path / "cifar-100-python"),
        "--data-root",
        "STEALKIT_DATA",
        "download",
    ):
        assert needle in msg, needle

    with pytest.raises(DatasetNotFound, match="tiny_imagenet32"):
        load_dataset("tiny_imagenet32", "val", root=tmp_path, download=False)
    with pytest.raises(DatasetNotFound):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DatasetNotFound):
        load_dataset(f"archive:{tmp_path / 'nope.tar.gz'}")


def test_unknown_name_lists_registered():
    with pytest.raises(UnknownDataset) as info:
        load_dataset("imagenet-9000")
    msg = str(info.value)
    assert "imagenet-9000" in msg and all(name in msg for name in DATASETS)


def test_embedded_bad_split():
    with pytest.raises(ValueError, match="train"):
        load_dataset("digits", "val")


# ---------------------------------------------------------------- CLI


def test_cli_data_list_and_info(tmp_path):
    from typer.testing import CliRunner

    import stealkit.cli.data_cmds  # noqa: F401  (registers the "data" group)
    from stealkit.cli.app import app

    runner = CliRunner()
    listed = runner.invoke(app, ["data", "list", "--data-root", str(tmp_path)], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert all(name in listed.output for name in DATASETS)

    info = runner.invoke(app, ["data", "info", "digits", "--split", "test"], env={"COLUMNS": "200"})
    assert info.exit_code == 0, info.output
    assert "450" in info.output and "(3, 32, 32)" in info.output

    missing = runner.invoke(app, ["data", "info", "svhn", "--data-root", str(tmp_path), "--no-download"])
    assert missing.exit_code == 2 and "svhn" in missing.output
