"""The operator sees a thief coming: every account's coverage (the B4B coverage defence's state; Dubiński et al.,
NeurIPS 2023, arXiv:2310.08571) read straight from the ledger's database, by `stealkit accounts` and /metrics.
A hand-computed state checks the numbers; an honest and a stealing client through a real server check that
only the thief is flagged, and that /metrics says what the command says."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from typer.testing import CliRunner

from stealkit.cli import app as cli
from stealkit.data.embedded import load_digits_set, make_synthetic
from stealkit.db import Database
from stealkit.defences.coverage import SCHEMA, UPSERT_META, CoverageDefence, read_coverage
from stealkit.models.checkpoint import save_encoder
from stealkit.models.encoder import build_encoder, embed
from stealkit.service.ledger import Ledger
from stealkit.service.testing import BACKENDS, ServeProcess, ledger_url, post_raw as post

run = CliRunner().invoke


@pytest.fixture(params=BACKENDS)
def ledger(request, tmp_path):
    with ledger_url(request.param, tmp_path) as url:
        yield url


def accounts_json(url: str, threshold: float) -> dict:
    r = run(cli, ["accounts", "--ledger", url, "--threshold", str(threshold), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_coverage_read_from_the_database_equals_the_hand_values_and_stats(ledger):
    """2 tables of 3 planes (8 buckets each); bucket b of table t is stored as t·8 + b.
    a: table 0 {0, 1, 2}, table 1 {5}  -> (3/8 + 1/8) / 2 = 0.25,   4 buckets
    b: table 0 {7},       table 1 all  -> (1/8 + 8/8) / 2 = 0.5625, 9 buckets"""
    db = Database.open(ledger)
    assert read_coverage(db) is None  # no coverage state: nothing to read
    db.create(SCHEMA)
    assert read_coverage(db) == {}  # set up, nobody hashed yet
    with db.transaction() as tx:
        tx.execute(UPSERT_META, ("params", json.dumps({"num_planes": 3, "seed": 0, "feature_dim": 4, "num_tables": 2})))
        tx.executemany("INSERT INTO b4b_accounts (account, queries) VALUES (?, ?)", [("a", 10), ("b", 12)])
        tx.executemany("INSERT INTO b4b_buckets (account, bucket) VALUES (?, ?)",
                       [("a", b) for b in (0, 1, 2, 8 + 5)] + [("b", b) for b in (7, *range(8, 16))])
    hand = {"a": {"queries": 10, "buckets": 4, "coverage": 0.25}, "b": {"queries": 12, "buckets": 9, "coverage": 0.5625}}
    assert read_coverage(db) == hand
    defence = CoverageDefence(db_path=ledger, num_planes=3, num_tables=2, seed=0, curve="none", transform="none")
    assert {a: {k: v for k, v in defence.stats(a).items() if k != "sigma"} for a in hand} == hand
    defence.close()

    led = Ledger(ledger)
    for name in ("a", "b", "c"):  # c has an account but no queries yet
        led.create_account(name)
    out = accounts_json(ledger, 0.3)
    assert [r["account"] for r in out["accounts"]] == ["b", "a", "c"] and out["flagged"] == ["b"]
    assert {r["account"]: (r["queries"], r["buckets"], r["coverage"]) for r in out["accounts"]} == {
        "a": (10, 4, 0.25), "b": (12, 9, 0.5625), "c": (0, 0, 0.0)}
    text = run(cli, ["accounts", "--ledger", ledger, "--threshold", "0.3"]).stdout.splitlines()
    assert "FLAGGED" in text[1] and text[1].startswith("b ") and "56.25%" in text[1]
    assert not any("FLAGGED" in line for line in text[2:])
    assert run(cli, ["accounts", "--ledger", ledger, "--threshold", "0.3", "--fail-on-flag"]).exit_code == 3
    assert run(cli, ["accounts", "--ledger", ledger, "--threshold", "0.6", "--fail-on-flag"]).exit_code == 0


def test_without_coverage_state_the_view_says_how_to_measure_it_and_errors_are_one_line(tmp_path):
    url = str(tmp_path / "plain.sqlite")
    Ledger(url).create_account("alice")
    r = run(cli, ["accounts", "--ledger", url])
    assert r.exit_code == 0 and "alice" in r.stdout
    assert "coverage is not measured" in r.stdout and "--defence coverage --defence-arg curve=none --defence-arg transform=none" in r.stdout
    assert accounts_json(url, 0.05)["coverage_measured"] is False
    for bad in (str(tmp_path / "missing.sqlite"), "http://example.com/ledger"):
        r = run(cli, ["accounts", "--ledger", bad])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "missing.sqlite").exists()  # looking did not create it


PLANES, TABLES = 8, 2  # 256 buckets per table: a few hundred queries separate a narrow task from a sweep


def metric(text: str, name: str, account: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{account="{account}"}} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{account={account!r}}} not in the metrics")



def test_only_the_thief_is_flagged_through_a_real_server_and_metrics_agree(tmp_path, ledger):
    """A monitor-only coverage defence (no noise, no transform) on a real `stealkit serve`. The honest client
    embeds 137 images of one digit (a narrow task); the thief as many synthetic images of ten shapes in random
    colours (a sweep). The operator's threshold: 4× the coverage that known-honest traffic reaches (held-out
    images of the same digit, hashed as the server hashes them)."""
    torch.manual_seed(0)
    encoder = build_encoder("cnn_tiny").eval()
    ckpt = save_encoder(encoder, tmp_path / "victim")
    train, test = load_digits_set("train"), load_digits_set("test")
    honest_images = train.images[train.labels == 3]
    thief_images = make_synthetic(14, seed=0).images[: len(honest_images)]
    reference = CoverageDefence(num_planes=PLANES, num_tables=TABLES, curve="none", transform="none")
    reference(embed(encoder, test.images[test.labels == 3]), account="known-honest")
    threshold = 4 * reference.stats("known-honest")["coverage"]

    led = Ledger(ledger)
    keys = {"honest": led.create_account("honest"), "thief": led.create_account("thief")}
    (tmp_path / "token").write_text("s3cret\n")
    args = ["--checkpoint", str(ckpt), "--ledger", ledger, "--device", "cpu", "--threads", "1", "--log-level", "warning",
            "--metrics-token-file", str(tmp_path / "token"), "--defence", "coverage", "--defence-arg", "curve=none",
            "--defence-arg", "transform=none", "--defence-arg", f"num_planes={PLANES}", "--defence-arg", f"num_tables={TABLES}"]
    with ServeProcess(args, log_path=tmp_path / "serve.log") as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        for name, images in (("honest", honest_images), ("thief", thief_images)):
            for i in range(0, len(images), 32):
                got = post(c, keys[name], images[i: i + 32])
                if i == 0:  # monitor-only: the answers are the encoder's own
                    torch.testing.assert_close(got, embed(encoder, images[i: i + 32]), rtol=1e-5, atol=1e-6)
        out = accounts_json(ledger, threshold)
        metrics = c.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text

    rows = {r["account"]: r for r in out["accounts"]}
    assert out["coverage_measured"] and out["flagged"] == ["thief"] and out["accounts"][0]["account"] == "thief"
    for name, images in (("honest", honest_images), ("thief", thief_images)):
        assert rows[name]["billed"] == rows[name]["queries"] == len(images)
        assert metric(metrics, "stealkit_account_coverage", name) == rows[name]["coverage"]
        assert metric(metrics, "stealkit_account_coverage_buckets", name) == rows[name]["buckets"]
        assert metric(metrics, "stealkit_account_billed_queries", name) == rows[name]["billed"]
    assert rows["honest"]["coverage"] <= threshold / 2, (rows, threshold)  # a clear margin on both sides
    assert rows["thief"]["coverage"] >= 2 * threshold, (rows, threshold)


def test_coverage_rate_read_from_the_database_and_flagged_by_rate(tmp_path):
    """Hand state as above (2 tables of 3 planes) plus a stored reference c_ref(n) = n/16 on [1, 16]:
    a: coverage 0.25 after 10 queries -> rate 0.25 / (10/16) = 0.4;  b: 0.5625 after 12 -> 0.5625 / 0.75 = 0.75.
    Flagged by rate above 0.5: b only; by coverage above 0.2: both."""
    url = str(tmp_path / "ledger.sqlite")
    db = Database.open(url)
    db.create(SCHEMA)
    with db.transaction() as tx:
        tx.execute(UPSERT_META, ("params", json.dumps({"num_planes": 3, "seed": 0, "feature_dim": 4, "num_tables": 2})))
        tx.execute(UPSERT_META, ("rate_reference", json.dumps({"queries": [1, 16], "coverage": [1 / 16, 1.0]})))
        tx.executemany("INSERT INTO b4b_accounts (account, queries) VALUES (?, ?)", [("a", 10), ("b", 12)])
        tx.executemany("INSERT INTO b4b_buckets (account, bucket) VALUES (?, ?)",
                       [("a", b) for b in (0, 1, 2, 8 + 5)] + [("b", b) for b in (7, *range(8, 16))])
    got = read_coverage(db)
    assert got["a"]["rate"] == pytest.approx(0.4) and got["b"]["rate"] == pytest.approx(0.75)
    led = Ledger(url)
    for name in ("a", "b"):
        led.create_account(name)
    r = run(cli, ["accounts", "--ledger", url, "--rate-threshold", "0.5", "--json"])
    out = json.loads(r.stdout)
    assert out["flagged"] == ["b"] and out["rate_threshold"] == 0.5
    assert {x["account"]: round(x["rate"], 6) for x in out["accounts"]} == {"a": 0.4, "b": 0.75}
    assert accounts_json(url, 0.2)["flagged"] == ["b", "a"]
    text = run(cli, ["accounts", "--ledger", url, "--rate-threshold", "0.5"]).stdout
    assert "rate" in text.splitlines()[0] and "coverage rate > 0.5" in text


def test_rate_threshold_without_a_reference_is_a_one_line_error(tmp_path):
    url = str(tmp_path / "ledger.sqlite")
    d = CoverageDefence(db_path=url, num_planes=3, curve="none", transform="none")
    d(torch.randn(4, 8), account="x")
    d.close()
    r = run(cli, ["accounts", "--ledger", url, "--rate-threshold", "0.5"])
    assert r.exit_code != 0 and "rate_reference" in r.output and "Traceback" not in r.output
