"""B4B-style coverage defence: a sweeping account gets more noise than a narrow one; state persists."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stealkit.defences.base import DEFENCES, build_defence
from stealkit.defences.coverage import CoverageDefence, noise_curve
from stealkit.models.encoder import build_encoder
from stealkit.runtime import derived_seed
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


# ---------------------------------------------------------------------------------------------------------
# The "b4b-released" preset: B4B's released end-to-end setting (Dubiński, Pawlak, Boenisch, Trzciński, Dziedzic,
# "Bucks for Buckets (B4B): Active Defenses Against Stealing Encoders", NeurIPS 2023, arXiv:2310.08571).

# Two tables of three hand-chosen hyperplanes in D = 3 (the columns; a seed would draw N(0, 1) ones):
#   table 0: e1, e2, e3                    -> bits [x1 > 0, x2 > 0, x3 > 0]
#   table 1: (1,1,0), (0,1,1), (1,0,-1)    -> bits [x1 + x2 > 0, x2 + x3 > 0, x1 - x3 > 0]
# bucket = bit0 + 2·bit1 + 4·bit2, 2^3 = 8 buckets per table.
HAND_PLANES = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                            [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, -1.0]]])


def b4b_sigma(coverage_percent):
    """The released cost function (end2end-stealing: get_stdev and train_mapper's f):
    σ = λ·(exp(ln(α/λ)·c/β) − 1), floored at 0, with c the bucket coverage in percent averaged over the
    tables, α = 0.8, β = 80, λ = 1e-6 (its argparse defaults)."""
    alpha, beta, lam = 0.8, 80.0, 1e-6
    return max(lam * (math.exp(math.log(alpha / lam) * coverage_percent / beta) - 1), 0.0)


def test_b4b_released_preset_fills_the_released_settings_and_explicit_keys_win():
    d = build_defence({"name": "coverage", "preset": "b4b-released"})
    c = d.config
    assert (c.num_tables, c.num_planes, c.coverage_unit, c.alpha, c.beta, c.lam) == (20, 12, "percent", 0.8, 80.0, 1e-6)
    assert (c.relative, c.noise_per, c.transform, c.curve) == (False, "batch", "b4b-sybil-map", "exp")
    assert build_defence({"name": "coverage", "preset": "b4b-released", "lam": 1e-7, "alpha": 1.0}).config.lam == 1e-7
    s = build_defence({"name": "coverage"}).config  # stealkit's own setting stays the default
    assert (s.preset, s.num_tables, s.coverage_unit, s.alpha, s.beta, s.lam, s.relative, s.noise_per, s.transform) == (
        "stealkit", 1, "fraction", 1.0, 0.5, 0.01, True, "query", "affine")
    with pytest.raises(ValueError, match="preset"):
        build_defence({"name": "coverage", "preset": "b4b"})


def test_b4b_released_buckets_coverage_and_one_sigma_per_batch_match_a_hand_computed_case():
    d = CoverageDefence(preset="b4b-released", num_tables=2, num_planes=3, transform="none", secret="s", seed=0)
    d._set_dim(3)
    d.planes = HAND_PLANES.clone()
    k = 1e-3  # small features, so that float32 resolves noise of σ ≈ 1e-4 well
    q1, q2 = [1.0, 2.0, 3.0], [-1.0, 2.0, -3.0]
    q3, q4 = [2.0, -1.0, 3.0], [-2.0, -1.0, -3.0]
    # q1: t0 bits (1,1,1) -> 7; t1 (3>0, 5>0, -2>0) = (1,1,0) -> 3
    # q2: t0 (0,1,0) -> 2;       t1 (1>0, -1>0, 2>0) = (1,0,1) -> 5
    # q3: t0 (1,0,1) -> 5;       t1 (1>0, 2>0, -1>0) = (1,1,0) -> 3 (hit before)
    # q4: t0 (0,0,0) -> 0;       t1 (-3>0, -4>0, 1>0) = (0,0,1) -> 4
    assert d.buckets(k * torch.tensor([q1, q2, q3, q4])).tolist() == [[7, 3], [2, 5], [5, 3], [0, 4]]
    batches = [
        # after batch 1: t0 {7, 2}, t1 {3, 5}: coverage = mean(2/8, 2/8) = 25 %
        (torch.tensor([q1, q2]), 0, 25.0),
        # after batch 2 (q1 again): t0 {7, 2, 5, 0}, t1 {3, 5, 4}: mean(4/8, 3/8) = 43.75 %
        (torch.tensor([q3, q4, q1]), 2, 43.75),
        # batch 3 repeats q1 alone: no new bucket, the same 43.75 % and σ, a fresh draw of noise
        (torch.tensor([q1]), 5, 43.75),
    ]
    residuals = []
    for x, before, percent in batches:
        f = k * x
        out = d(f, account="thief")
        sigma = b4b_sigma(percent)  # 25 % -> 6.89e-5, 43.75 % -> 1.69e-3
        z = torch.randn(f.shape, generator=torch.Generator().manual_seed(derived_seed("noise", "s", 0, "thief", before)))
        r = out - f
        assert torch.allclose(r, sigma * z, rtol=1e-3, atol=1e-9)  # absolute σ (not scaled by the answer), one per batch
        ratio = (r / z).flatten()
        assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-3)  # the same σ for every entry of the batch
        assert d.stats("thief")["coverage"] * 100 == pytest.approx(percent)
        assert d.stats("thief")["sigma"] == pytest.approx(sigma, rel=1e-9)
        residuals.append(r)
    assert d.stats("thief") | {"sigma": 0} == {"queries": 6, "buckets": 7, "coverage": 0.4375, "sigma": 0}
    assert not torch.allclose(residuals[2][0], residuals[0][0])  # a repeated query is noised afresh


def test_b4b_released_planes_are_seeded_normal_draws_one_set_per_table():
    a, b = CoverageDefence(preset="b4b-released", seed=3), CoverageDefence(preset="b4b-released", seed=3)
    f = torch.randn(4, 16)
    assert a.buckets(f).shape == (4, 20) and b.buckets(f).shape == (4, 20) and torch.equal(a.planes, b.planes)
    assert a.planes.shape == (20, 16, 12) and not torch.equal(a.planes[0], a.planes[1])
    assert torch.equal(a.planes, torch.randn(20, 16, 12, generator=torch.Generator().manual_seed(derived_seed("planes", 3))))


def test_b4b_released_state_is_per_account():
    """Each account has its own coverage and its own map y = xA + B, A ~ U(−1,1)^{D×D}, B ~ U(−1,1)^D (sybils do
    not share a space). The same account asking the same thing again gets the σ of the coverage it has reached
    (no new bucket) but a new noise draw, as B4B draws one per batch; replaying an account's stream against a
    fresh state gives bitwise the same answers."""
    kw = dict(preset="b4b-released", num_tables=2, num_planes=4, secret="k")  # 32 queries cover 65.6 %: σ ≈ 0.07
    d = CoverageDefence(**kw)
    sweep, _ = _sweep_and_narrow(n=64, d=8)
    ya = d(sweep[:32], account="a")
    yb = d(sweep[:32], account="b")
    assert d.stats("a") == d.stats("b") and d.stats("a")["queries"] == 32  # b's queries do not count for a
    eye, zero = torch.eye(8), torch.zeros(1, 8)
    maps = {acc: (d.transform(eye, acc) - d.transform(zero, acc), d.transform(zero, acc)[0]) for acc in "ab"}
    for a_mat, b_vec in maps.values():
        assert a_mat.abs().max() <= 1 and b_vec.abs().max() <= 1 and a_mat.abs().min() > 0
    assert not torch.allclose(maps["a"][0], maps["b"][0], atol=1e-2) and not torch.allclose(ya, yb, atol=1e-2)
    before = d.stats("a")
    again = d(sweep[:32], account="a")
    after = d.stats("a")
    assert (after["buckets"], after["coverage"], after["sigma"]) == (before["buckets"], before["coverage"], before["sigma"])
    assert after["sigma"] == pytest.approx(b4b_sigma(65.625)) and not torch.allclose(again, ya, atol=1e-3)
    replay = CoverageDefence(**kw)
    assert torch.equal(replay(sweep[:32], account="a"), ya) and torch.equal(replay(sweep[:32], account="a"), again)
    other = CoverageDefence(**{**kw, "secret": "another"})
    assert not torch.allclose(other.transform(eye, "a"), d.transform(eye, "a"), atol=1e-2)


def test_b4b_released_transforms_follow_the_released_formulas():
    x = torch.randn(5, 6)
    aff = CoverageDefence(transform="b4b-affine", curve="none")
    scale = aff.transform(torch.ones(1, 6), "u") - aff.transform(torch.zeros(1, 6), "u")
    shift = aff.transform(torch.zeros(1, 6), "u")
    assert scale.abs().max() <= 1 and shift.abs().max() <= 1
    assert torch.allclose(aff(x, account="u"), x * scale + shift, atol=1e-6)  # per coordinate, no mixing
    pad = CoverageDefence(transform="b4b-shuffle-pad", curve="none")
    y = pad(x, account="u")
    assert y.shape == (5, 12)  # pad_dim = D by default, as released
    kept = torch.isin(y, x)
    assert (kept.sum(1) == 6).all() and torch.equal(y[:, ~kept[0]], y[:1, ~kept[0]].expand(5, -1))  # pads fixed
    assert torch.equal(y[kept].reshape(5, 6).sort(1).values, x.sort(1).values)
    both = CoverageDefence(transform="b4b-affine-shuffle-pad", pad_dim=2, curve="none")
    assert both(x, account="u").shape == (5, 8)
    binary = CoverageDefence(transform="b4b-binary", curve="none")
    b = binary(x, account="u")
    assert b.shape == (5, 12) and set(b.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(binary(x, account="u"), b) and not torch.equal(binary(x, account="v"), b)


def test_b4b_released_preset_is_served_with_its_state_in_the_ledger(tmp_path):
    from stealkit.service import ServiceSettings
    from stealkit.service.app import build_served_defence

    ledger = str(tmp_path / "ledger.sqlite")
    d = build_served_defence(ServiceSettings(ledger=ledger, defence={"name": "coverage", "preset": "b4b-released"}))
    assert d.db_path == ledger and d.config.num_tables == 20
    d(torch.randn(8, 16), account="x")
    again = CoverageDefence(preset="b4b-released", db_path=ledger)
    assert again.stats("x") == d.stats("x") and again.stats("x")["queries"] == 8
    with pytest.raises(ValueError, match="num_tables"):
        CoverageDefence(db_path=ledger)  # the stealkit preset's one table cannot read this state


def test_input_seeded_noise_makes_repeats_identical_and_averaging_useless():
    """noise_seed "input": the same image from one account gets the same answer (its coverage stands still:
    a repeat hits no new bucket), so averaging k repeats keeps the whole noise; the default ("stream") draws
    afresh and averaging divides it by about √k. Another account or another image: an independent draw. The
    noise equals a hand-seeded draw from (secret, seed, account, sha256 of the image's bytes)."""
    import hashlib

    sweep, _ = _sweep_and_narrow(n=64, d=32)
    images = torch.randint(0, 256, (64, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    spec = {"num_planes": 6, "transform": "none", "curve": "linear", "alpha": 0.5, "beta": 1.0, "relative": False}
    fixed, fresh = CoverageDefence(noise_seed="input", **spec), CoverageDefence(**spec)
    first = fixed(sweep, images=images, account="thief")  # covers what it will cover
    x, img = sweep[:8], images[:8]
    repeats = [fixed(x, images=img, account="thief") for _ in range(16)]
    assert all(torch.equal(r, repeats[0]) for r in repeats)
    # the first call answered these rows at lower coverage (σ after each query): a smaller σ, the same direction
    cos = torch.nn.functional.cosine_similarity(first[:8] - x, repeats[0] - x, dim=1)
    assert torch.allclose(cos, torch.ones(8), atol=1e-5)
    sigma = fixed.stats("thief")["sigma"]
    for i in range(8):  # by hand: σ · N(0, I) seeded from the image's bytes
        seed = derived_seed("noise-input", "stealkit-b4b", 0, "thief", hashlib.sha256(img[i].numpy().tobytes()).hexdigest())
        assert torch.allclose(repeats[0][i], x[i] + sigma * torch.randn(32, generator=torch.Generator().manual_seed(seed)), atol=1e-6)
    other = fixed(x, images=img, account="sybil")
    assert not torch.equal(other, repeats[0])
    fresh(sweep, images=images, account="thief")
    err = lambda outs: (torch.stack(outs).mean(0) - x).norm(dim=1).mean().item()  # noqa: E731
    fresh_outs = [fresh(x, images=img, account="thief") for _ in range(16)]
    assert err(repeats) == pytest.approx(err(repeats[:1]))  # averaging removes nothing
    assert err(fresh_outs) < 0.5 * err(fresh_outs[:1])  # ~1/4 with 16 fresh draws


def test_bucket_seeded_noise_is_shared_by_near_duplicates():
    """noise_seed "bucket": an image nudged to buy a fresh draw falls in the same LSH cell and gets the same
    noise; under "input" its new bytes get a new draw."""
    sweep, _ = _sweep_and_narrow(n=32, d=16)
    images = torch.randint(0, 250, (32, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    nudged_img = images.clone()
    nudged_img[:, 0, 0, 0] += 1
    nudged = sweep + 1e-5  # the encoder barely moves
    spec = {"num_planes": 6, "num_tables": 3, "transform": "none", "curve": "linear", "alpha": 0.5, "beta": 1.0, "relative": False}
    by_cell, by_input = CoverageDefence(noise_seed="bucket", **spec), CoverageDefence(noise_seed="input", **spec)
    for d in (by_cell, by_input):
        d(sweep, images=images, account="t")  # coverage settles
    same = np.array_equal(by_cell.buckets(sweep), by_cell.buckets(nudged))
    assert same  # the premise: 1e-5 moves no row across a hyperplane here
    a, b = by_cell(sweep, images=images, account="t"), by_cell(nudged, images=nudged_img, account="t")
    assert torch.allclose(a - sweep, b - nudged, atol=1e-5)
    a, b = by_input(sweep, images=images, account="t"), by_input(nudged, images=nudged_img, account="t")
    assert not torch.allclose(a - sweep, b - nudged, atol=1e-2)
