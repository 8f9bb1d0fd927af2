"""Shared fixtures. Real-data tests use ../shared/data (or STEALKIT_TEST_DATA) and ../shared/victims (or
STEALKIT_TEST_VICTIMS); they skip with a reason on a machine without them, but under CI=true a missing
archive or victim is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STEALKIT_TEST_DATA", REPO.parent / "shared" / "data"))
SHARED_VICTIMS = Path(os.environ.get("STEALKIT_TEST_VICTIMS", REPO.parent / "shared" / "victims"))


def skip_or_fail(msg: str) -> None:
    """Skip with `msg`, or fail under CI=true (where everything a test needs must be there)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " — under CI=true that is a failure")
    pytest.skip(msg)


def require_shared(*names: str) -> Path:
    """Return the shared data root if every dataset folder in `names` is there (with no names: the root's
    INDEX.json); else skip (or fail under CI)."""
    wanted = {n: SHARED_DATA / n / "MANIFEST.json" for n in names} or {"INDEX.json": SHARED_DATA / "INDEX.json"}
    missing = [n for n, path in wanted.items() if not path.exists()]
    if missing:
        skip_or_fail(f"shared dataset archives {missing} not found under {SHARED_DATA} (set STEALKIT_TEST_DATA to their folder)")
    return SHARED_DATA


def require_victim(name: str) -> Path:
    """Return the shared victim folder `name` if it is there (its MANIFEST.json); else skip (or fail under CI)."""
    folder = SHARED_VICTIMS / name
    if not (folder / "MANIFEST.json").exists():
        skip_or_fail(f"shared victim {name!r} not found under {SHARED_VICTIMS} (set STEALKIT_TEST_VICTIMS to their folder)")
    return folder


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """A module that drops torch to one thread (tiny models) must not leave the rest of the run there."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Tiny, latency-bound models run as fast on one thread, and far faster when other work shares the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
