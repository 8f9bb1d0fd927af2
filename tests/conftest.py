"""Shared fixtures. Real-data tests use ../shared/data (or STEALKIT_TEST_DATA); they skip with a reason
on a machine without the archives, but under CI=true a missing archive is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STEALKIT_TEST_DATA", REPO.parent / "shared" / "data"))


def require_shared(*names: str) -> Path:
    """Return the shared data root if every dataset folder in `names` is there; else skip (or fail under CI)."""
    missing = [n for n in names if not (SHARED_DATA / n / "MANIFEST.json").exists()]
    if missing:
        msg = f"shared dataset archives {missing} not found under {SHARED_DATA} (set STEALKIT_TEST_DATA to their folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " — under CI=true a missing archive is a failure")
        pytest.skip(msg)
    return SHARED_DATA


@pytest.fixture
def shared_data():
    return require_shared()


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
