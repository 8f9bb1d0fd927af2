"""The coverage-rate variant of the coverage defence (stealkit.defences.coverage_rate) against hand-worked cases:
the reference sweep's expected coverage, its log-log interpolation, the ramp curve, and an account's rate and
noise computed from the defence's own buckets."""

import json

import numpy as np
import pytest
import torch

from stealkit.defences.coverage import CoverageDefence, noise_curve
from stealkit.defences.coverage_rate import build_reference, load_reference, reference_coverage


def test_build_reference_distinct_and_identical_buckets():
    distinct = np.arange(8)[:, None]  # every image its own bucket: coverage n / 2^p whatever the order
    ref = build_reference(distinct, num_planes=3, grid=[1, 4, 8], orders=3)
    assert ref["queries"] == [1, 4, 8] and ref["coverage"] == pytest.approx([1 / 8, 4 / 8, 8 / 8])
    same = np.zeros((5, 2), dtype=np.int64)  # two tables, one bucket each
    assert build_reference(same, num_planes=2, grid=[1, 5], orders=2)["coverage"] == pytest.approx([1 / 4, 1 / 4])


def test_build_reference_averages_over_orders():
    # buckets [0, 0, 1, 1]: after 2 images both are in one bucket with probability 1/3, so E[coverage] =
    # (1/3)(1/4) + (2/3)(2/4) = 5/12 of a 4-bucket table
    ids = np.array([[0], [0], [1], [1]])
    ref = build_reference(ids, num_planes=2, grid=[1, 2, 4], orders=3000, seed=1)
    assert ref["coverage"][0] == pytest.approx(0.25) and ref["coverage"][2] == pytest.approx(0.5)
    assert ref["coverage"][1] == pytest.approx(5 / 12, abs=0.01)


def test_reference_coverage_log_log_interpolation():
    ref = {"queries": [10, 100], "coverage": [0.01, 0.1]}  # c = n / 1000 on the grid: slope 1 in log-log
    got = reference_coverage(ref, [10, 10**1.5, 100, 1000, 5], num_planes=12)
    assert got[:4] == pytest.approx([0.01, 10**1.5 / 1000, 0.1, 1.0])  # on, between, at and beyond the grid
    assert got[4] == pytest.approx(5 / 4096)  # below the first point: every query a new bucket


def test_ramp_curve_by_hand():
    assert noise_curve([0.5, 0.8, 0.9, 1.0, 1.7], "ramp", alpha=3.0, beta=1.0, onset=0.8) == pytest.approx([0, 0, 1.5, 3, 3])


def _reference_file(tmp_path, planes=6, tables=1, seed=0):
    p = tmp_path / "ref.json"
    b = 2**planes  # c_ref(n) = n / 2^planes up to n = 2^planes: a sweep that finds a new bucket with every query
    p.write_text(json.dumps({"queries": [1, b], "coverage": [1 / b, 1.0], "num_tables": tables, "num_planes": planes, "seed": seed}))
    return p


def test_rate_defence_sigma_follows_the_accounts_unique_buckets(tmp_path):
    ref = _reference_file(tmp_path)
    d = CoverageDefence(num_tables=1, num_planes=6, curve="ramp", onset=0.5, beta=1.0, alpha=2.0, relative=True,
                        noise_seed="input", transform="none", rate_reference=str(ref))
    g = torch.Generator().manual_seed(0)
    sweep = torch.nn.functional.normalize(torch.randn(20, 16, generator=g), dim=1)
    out = d(sweep, account="thief")
    ids = d.buckets(sweep)[:, 0]
    unique = np.array([len(np.unique(ids[: i + 1])) for i in range(20)])  # hit buckets after each query
    rate = unique / np.arange(1, 21)  # c / c_ref with c_ref(n) = n / 64
    sigma = 2.0 * np.clip((rate - 0.5) / 0.5, 0, 1)
    noise_norm = (out - sweep).norm(dim=1).numpy()  # relative σ: noise std σ·‖f‖/√D per entry, ‖f‖ = 1
    nz = sigma > 0
    assert nz.any()
    ratio = noise_norm[nz] / sigma[nz]  # ‖z‖/√D for z ~ N(0, I_16): about 1
    assert 0.4 < ratio.min() and ratio.max() < 1.8
    assert np.allclose(noise_norm[~nz], 0.0)
    st = d.stats("thief")
    assert st["rate"] == pytest.approx(rate[-1]) and st["sigma"] == pytest.approx(sigma[-1])


def test_the_operators_view_reads_the_same_rate_from_the_database(tmp_path):
    from stealkit.db import Database
    from stealkit.defences.coverage import read_coverage

    ref, db = _reference_file(tmp_path), str(tmp_path / "state.sqlite")
    d = CoverageDefence(db_path=db, num_tables=1, num_planes=6, curve="ramp", onset=0.5, beta=1.0, alpha=2.0,
                        transform="none", rate_reference=str(ref))
    d(torch.randn(30, 16, generator=torch.Generator().manual_seed(2)), account="a")
    want = d.stats("a")["rate"]
    d.close()
    assert read_coverage(Database.open(db))["a"]["rate"] == pytest.approx(want)


def test_rate_defence_spares_an_account_that_repeats_one_image(tmp_path):
    ref = _reference_file(tmp_path)
    d = CoverageDefence(num_tables=1, num_planes=6, curve="ramp", onset=0.5, beta=1.0, alpha=2.0, relative=True,
                        noise_seed="input", transform="none", rate_reference=str(ref))
    f = torch.nn.functional.normalize(torch.randn(1, 16, generator=torch.Generator().manual_seed(1)), dim=1).repeat(8, 1)
    out = d(f, account="narrow")
    # after query i one bucket of 64 is hit: rate = 1 / i, σ > 0 only while 1/i > 0.5, i.e. for the first query
    assert (out[0] - f[0]).norm() > 0 and torch.equal(out[1:], f[1:])


def test_rate_reference_must_match_the_hashing(tmp_path):
    ref = _reference_file(tmp_path, planes=6)
    with pytest.raises(ValueError, match="num_tables, num_planes, seed"):
        CoverageDefence(num_tables=1, num_planes=8, curve="ramp", onset=0.5, beta=1.0, rate_reference=str(ref))
    with pytest.raises(ValueError, match="does not exist"):
        load_reference(tmp_path / "missing.json", 1, 6, 0)
    with pytest.raises(ValueError, match="beta > onset"):
        CoverageDefence(curve="ramp", onset=1.0, beta=1.0)


def _sticky(tmp_path, name):
    return CoverageDefence(db_path=str(tmp_path / f"{name}.sqlite"), num_tables=1, num_planes=6, curve="ramp", onset=0.5,
                           beta=1.0, alpha=2.0, relative=True, noise_seed="input", sticky=True, transform="none",
                           rate_reference=str(_reference_file(tmp_path)))


def test_sticky_answers_repeats_neither_clean_an_answer_nor_dilute_the_rate(tmp_path):
    g = torch.Generator().manual_seed(3)
    feats = torch.nn.functional.normalize(torch.randn(21, 16, generator=g), dim=1)
    imgs = torch.randint(0, 255, (21, 3, 4, 4), dtype=torch.uint8, generator=g)
    a, b = _sticky(tmp_path, "a"), _sticky(tmp_path, "b")
    first = a(feats[:20], images=imgs[:20], account="thief")
    for _ in range(5):  # the same 20 images again: identical answers, although 100 more queries were made
        assert torch.equal(a(feats[:20], images=imgs[:20], account="thief"), first)
    assert a.stats("thief")["queries"] == 120
    # the 21st distinct image gets exactly what it gets from an account that never repeated anything
    b(feats[:20], images=imgs[:20], account="thief")
    assert torch.equal(a(feats[20:], images=imgs[20:], account="thief"), b(feats[20:], images=imgs[20:], account="thief"))
    assert a.stats("thief")["rate"] == pytest.approx(b.stats("thief")["rate"])
    from stealkit.db import Database
    from stealkit.defences.coverage import read_coverage

    a.close()
    assert read_coverage(Database.open(str(tmp_path / "a.sqlite")))["thief"]["rate"] == pytest.approx(b.stats("thief")["rate"])
    with pytest.raises(ValueError, match="noise_seed: input"):
        CoverageDefence(sticky=True)
