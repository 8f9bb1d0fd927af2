"""B4B-style coverage defence: a sweeping account gets more noise than a narrow one; state persists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stealkit.defences.base import DEFENCES, build_defence
from stealkit.defences.coverage import CoverageDefence, noise_curve
from stealkit.models.encoder import build_encoder
from stealkit.targets.local import LocalTarget


def _sweep_and_narrow(n=512, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    sweep = torch.randn(n, d, generator=g) * 2.0  # all over the embedding space
    base = torch.randn(1, d, generator=g) * 2.0
    narrow = base + 0.01 * torch.randn(n, d, generator=g)  # one small region (a narrow task)
    return sweep, narrow


def test_registered_and_built_from_spec():
    assert "coverage" in DEFENCES
    d = build_defence({"name": "coverage", "num_planes": 6, "transform": "none"})
    assert isinstance(d, CoverageDefence) and d.num_buckets == 64


def test_noise_curve_shapes():
    c = np.linspace(0, 1, 11)
    s = noise_curve(c, "exp", alpha=1.0, beta=0.5, lam=0.01)
    assert s[0] == 0 and np.all(np.diff(s) > 0)
    assert noise_curve(0.5, "exp", 1.0, 0.5, 0.01) == pytest.approx(0.99)
    assert noise_curve(0.25, "linear", 1.0, 0.5) == pytest.approx(0.5)
    assert np.all(noise_curve(c, "none") == 0)
    with pytest.raises(ValueError):
        noise_curve(c, "cubic")


def test_sweeping_account_gets_more_noise_than_narrow_one():
    defence = CoverageDefence(num_planes=8, transform="none", alpha=1.0, beta=0.5, lam=0.01)
    sweep, narrow = _sweep_and_narrow()
    out_s = torch.cat([defence(sweep[i : i + 64], account="thief") for i in range(0, len(sweep), 64)])
    out_n = torch.cat([defence(narrow[i : i + 64], account="honest") for i in range(0, len(narrow), 64)])
    st, sh = defence.stats("thief"), defence.stats("honest")
    assert st["queries"] == sh["queries"] == 512
    assert st["coverage"] > 0.5 and sh["coverage"] < 0.05
    assert st["sigma"] > 10 * sh["sigma"]
    rel = lambda out, f: ((out - f).norm(dim=1) / f.norm(dim=1)).mean().item()  # noqa: E731
    noise_thief, noise_honest = rel(out_s[-128:], sweep[-128:]), rel(out_n[-128:], narrow[-128:])
    assert noise_thief > 0.1 and noise_honest < 0.01 and noise_thief > 20 * noise_honest


def test_state_survives_restart_and_settings_are_checked(tmp_path):
    db = tmp_path / "ledger.sqlite"
    sweep, _ = _sweep_and_narrow(n=200)
    a = CoverageDefence(num_planes=6, db_path=str(db), transform="affine")
    a(sweep, account="x")
    before = a.stats("x")
    y1 = a.transform(sweep[:5], "x")
    a.close()
    b = CoverageDefence(num_planes=6, db_path=str(db), transform="affine")
    assert b.stats("x") == before and b.feature_dim == 32
    assert torch.allclose(b.transform(sweep[:5], "x"), y1)
    b(sweep[:10], account="x")
    assert b.stats("x")["queries"] == 210
    b.close()
    with pytest.raises(ValueError, match="num_planes"):
        CoverageDefence(num_planes=7, db_path=str(db))


def test_per_account_transforms_differ_and_rotation_keeps_geometry():
    d = CoverageDefence(num_planes=4, transform="rotation", curve="none", lam=0.01)
    f = torch.randn(10, 16)
    ya, yb = d(f, account="a"), d(f, account="b")
    assert not torch.allclose(ya, yb, atol=1e-3)
    assert torch.allclose(torch.cdist(ya, ya), torch.cdist(f, f), atol=1e-4)  # curve "none": no noise
    assert torch.allclose(d(f, account="a"), ya, atol=1e-5)  # fixed per account
    s = CoverageDefence(num_planes=4, transform="shuffle", curve="none")
    ys = s(f, account="a")
    assert torch.allclose(ys.abs().sort(1).values, f.abs().sort(1).values)


def test_works_behind_a_local_target():
    torch.manual_seed(0)
    enc = build_encoder("cnn_tiny").eval()
    target = LocalTarget(enc, defence=CoverageDefence(num_planes=6), account="alice")
    imgs = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    out = target.embed(imgs)
    assert out.shape == (20, 64) and target.queries == 20
    assert target.defence.stats("alice")["queries"] == 20


def test_sybil_spreads_queries_and_aligns_per_account_transforms():
    from stealkit.attacks.base import build_attack
    from stealkit.attacks.sybil import fit_alignment
    from stealkit.data.embedded import make_synthetic
    import stealkit.attacks.sybil  # noqa: F401

    torch.set_num_threads(1)
    torch.manual_seed(0)
    victim = build_encoder("cnn_tiny", input_size=16).eval()
    surrogate = make_synthetic(20, seed=4, size=16)  # 200 images
    defence = CoverageDefence(num_planes=6, transform="affine", curve="none", bias_scale=0.1)
    targets = [LocalTarget(victim, defence=defence, account=f"key{j}") for j in range(3)]
    cfg = {"arch": "cnn_tiny", "epochs": 1, "batch_size": 32, "amp": False, "augment": "flip", "overlap": 80, "loss": "mse"}
    result = build_attack("sybil", cfg).steal(targets, surrogate, device="cpu", progress=False)
    per = result.info["per_account_queries"]
    assert per == [t.queries for t in targets] and sum(per) == result.queries == 200 + 80 * 2
    assert [defence.stats(f"key{j}")["queries"] for j in range(3)] == per
    assert result.info["aligned_accounts"] == [1, 2]
    # with overlap > D the affine alignment undoes another account's affine transform exactly
    clean = victim(surrogate.images[:120].float() / 255).detach()
    y0, y1 = defence.transform(clean, "key0"), defence.transform(clean, "key1")
    mapping = fit_alignment(y1[:80], y0[:80], "affine")
    assert torch.allclose(mapping(y1[80:]), y0[80:], atol=1e-3 * y0.abs().max().item())
    assert not torch.allclose(y1, y0, atol=1e-2)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path):
    from stealkit.service.testing import ledger_url

    with ledger_url(request.param, tmp_path) as url:
        yield url


def test_state_is_shared_by_instances_on_one_database(state_url):
    """Two workers' defences on the ledger's database act as one: alternating calls give bitwise the
    answers of a single defence (counts, buckets and noise streams are the shared state), and
    concurrent calls lose no query or bucket."""
    import threading

    sweep, _ = _sweep_and_narrow(n=240)
    kw = dict(num_planes=6, transform="affine", alpha=1.0, lam=0.01)
    w1, w2, single = CoverageDefence(db_path=state_url, **kw), CoverageDefence(db_path=state_url, **kw), CoverageDefence(**kw)
    for i in range(0, 120, 20):
        worker = w1 if (i // 20) % 2 == 0 else w2
        assert torch.equal(worker(sweep[i : i + 20], account="x"), single(sweep[i : i + 20], account="x"))
    assert w1.stats("x") == w2.stats("x") == single.stats("x")
    threads = [threading.Thread(target=lambda j=j: (w1 if j % 2 else w2)(sweep[120 + 10 * j : 130 + 10 * j], account="y")) for j in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    whole = CoverageDefence(**kw)
    whole(sweep[120:], account="y")
    assert w1.stats("y") == whole.stats("y") and w1.stats("y")["queries"] == 120
