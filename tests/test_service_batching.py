"""Cross-request batching through a real server on loopback: concurrent requests share forward
passes, yet every answer is bitwise the one the same request gets alone, and the one of the same
stacked computation done by hand; each account's defence state and bill stay its own.
"""

from __future__ import annotations

import threading

import httpx
import pytest
import torch

from stealkit.defences.coverage import CoverageDefence
from stealkit.models.encoder import build_encoder, embed
from stealkit.service import Ledger, ServiceSettings, create_app
from stealkit.service.background import serve_in_thread
from stealkit.service.invariance import batching_mode
from stealkit.service.testing import post_raw as post
from stealkit.targets.answers import api_answers


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder("cnn_tiny").eval()


def imgs(n, seed):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))



def concurrently(url, jobs):
    """jobs: [(key, images)] sent at once from one thread each -> answers in job order."""
    out, start = [None] * len(jobs), threading.Barrier(len(jobs))

    def run(i, key, x):
        with httpx.Client(base_url=url, timeout=60) as c:
            start.wait(timeout=30)
            out[i] = post(c, key, x)

    threads = [threading.Thread(target=run, args=(i, k, x)) for i, (k, x) in enumerate(jobs)]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert all(o is not None for o in out)
    return out


def test_batched_answers_equal_the_same_requests_alone(tmp_path, encoder):
    ledger = str(tmp_path / "l.sqlite")
    key = Ledger(ledger).create_account("a")
    jobs = [(key, imgs(1 + i % 3, seed=i)) for i in range(12)]  # 1–3 images each, 24 in all
    app = create_app(ServiceSettings(ledger=ledger, device="cpu", batch_wait_ms=200, batch_max_images=64), encoder=encoder)
    with serve_in_thread(app) as url:
        st = app.state.service
        assert st.batching_mode == "dynamic"  # CPU kernels here: every batch size >= 2 gives a row the same bits
        together = concurrently(url, jobs)
        forwards = st.batcher.forwards
        with httpx.Client(base_url=url, timeout=60) as c:
            alone = [post(c, key, x) for _, x in jobs]  # one at a time: each its own forward pass
    assert forwards < len(jobs)  # they did share forward passes
    for got, want in zip(together, alone):
        assert torch.equal(got, want)
    stacked = api_answers(encoder, torch.cat([x for _, x in jobs]))  # the same computation by hand, in one batch
    assert torch.equal(torch.cat(together), stacked)
    # a multi-image request equals LocalTarget's in-process answer (a lone image is a pair, see test_service_api)
    for got, (_, x) in zip(together, jobs):
        if len(x) > 1:
            assert torch.equal(got, embed(encoder, x))
    assert Ledger(ledger).usage("a").queries == 2 * 24


@pytest.mark.parametrize("spec", [
    {"name": "coverage", "num_planes": 6, "transform": "affine", "alpha": 1.0, "lam": 0.01},
    {"name": "coverage", "preset": "b4b-released", "num_tables": 3, "num_planes": 6},  # one σ per request, sybil maps
], ids=["stealkit", "b4b-released"])
def test_each_account_keeps_its_own_defence_state_and_bill(tmp_path, encoder, spec):
    """Two accounts' requests share forward passes; the coverage defence (state in the ledger's database)
    sees each account's rows alone and in its order: the answers equal a fresh defence applied to each
    account's unbatched features in turn."""
    ledger = str(tmp_path / "l.sqlite")
    led = Ledger(ledger)
    keys = {name: led.create_account(name) for name in ("alice", "bob")}
    app = create_app(ServiceSettings(ledger=ledger, device="cpu", defence=spec, batch_wait_ms=200), encoder=encoder)
    rounds = [[("alice", imgs(2, seed=10 * r)), ("bob", imgs(3, seed=10 * r + 1))] for r in range(4)]
    answers = {"alice": [], "bob": []}
    with serve_in_thread(app) as url:
        before = app.state.service.batcher.forwards
        for jobs in rounds:
            for (name, _), got in zip(jobs, concurrently(url, [(keys[n], x) for n, x in jobs])):
                answers[name].append(got)
        assert app.state.service.batcher.forwards - before < 2 * len(rounds)  # shared passes
    reference = CoverageDefence(**{k: v for k, v in spec.items() if k != "name"})  # in memory, empty
    for name in ("alice", "bob"):
        for (n, x), got in zip([j for jobs in rounds for j in jobs if j[0] == name], answers[name]):
            assert torch.equal(got, reference(embed(encoder, x), images=x, account=n))
    shared = CoverageDefence(db_path=ledger, **{k: v for k, v in spec.items() if k != "name"})  # the server kept the state in the ledger's database
    assert shared.stats("alice") == reference.stats("alice") and shared.stats("alice")["queries"] == 8
    assert shared.stats("bob")["queries"] == 12
    assert (led.usage("alice").queries, led.usage("bob").queries) == (8, 12)


class _SizeDependent(torch.nn.Module):
    """Features that change with the batch size (like kernels chosen by shape), not with the other rows."""

    feature_dim = 4

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        f = x.float().mean(dim=(2, 3))
        return torch.cat([f, f[:, :1]], 1) * self.w + 1e-3 * len(x)


class _RowMixing(_SizeDependent):
    def forward(self, x):  # a row's features depend on the other rows (train-mode BatchNorm, say)
        f = super().forward(x)
        return f - f.mean(0, keepdim=True)


def test_batching_mode_is_measured_on_the_served_encoder(encoder):
    assert batching_mode(encoder, 32, 16) == "dynamic"
    assert batching_mode(_SizeDependent(), 8, 16) == "fixed"
    assert batching_mode(_RowMixing(), 8, 16) == "off"


def test_fixed_mode_pads_every_forward_to_one_size(tmp_path):
    """An encoder whose answers depend on the batch size: every forward has exactly batch_max_images rows,
    so an answer is the same alone or batched, and equals that padded computation."""
    ledger = str(tmp_path / "l.sqlite")
    key = Ledger(ledger).create_account("a")
    enc = _SizeDependent()
    app = create_app(ServiceSettings(ledger=ledger, device="cpu", batch_wait_ms=100, batch_max_images=8), encoder=enc)
    jobs = [(key, imgs(1 + i % 2, seed=i)) for i in range(6)]
    with serve_in_thread(app) as url:
        assert app.state.service.batching_mode == "fixed"
        together = concurrently(url, jobs)
        with httpx.Client(base_url=url, timeout=60) as c:
            alone = [post(c, key, x) for _, x in jobs]
    for got, want, (_, x) in zip(together, alone, jobs):
        assert torch.equal(got, want)
        padded = torch.cat([x, x[-1:].expand(8 - len(x), -1, -1, -1)])
        assert torch.equal(got, api_answers(enc, padded)[: len(x)])


def test_row_mixing_encoder_is_served_unbatched(tmp_path):
    ledger = str(tmp_path / "l.sqlite")
    key = Ledger(ledger).create_account("a")
    enc = _RowMixing()
    app = create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=enc)
    x = imgs(3, seed=0)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert app.state.service.batching_mode == "off" and app.state.service.batcher is None
        assert torch.equal(post(c, key, x), api_answers(enc, x))
        assert c.get("/readyz").json()["batching"] == "off"
