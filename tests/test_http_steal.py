"""Stealing over HTTP end to end : the runner with a `target:` block against a real
loopback server (the ledger is the judge of what was billed), no re-billing on a rerun,
`stealkit steal --url`, `quickstart --serve`, and defence sweeps measuring what honest users keep.

Everything is tiny: a randomly initialised cnn_tiny victim, 48 surrogate images, 1-epoch attacks,
kNN probes on a slice of the embedded digits set.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from stealkit.cli import app
from stealkit.data import load_dataset
from stealkit.experiment.config import ExperimentConfig
from stealkit.experiment.runner import run_experiment
from stealkit.models.checkpoint import load_encoder, save_encoder
from stealkit.models.encoder import build_encoder, embed
from stealkit.service import Ledger, ServiceSettings, create_app
from stealkit.service.background import serve_in_thread

N_SURROGATE, TRAIN, TEST = 48, 300, 150


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def victim_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_encoder(build_encoder("cnn_tiny"), tmp_path_factory.mktemp("victim") / "victim", dataset="synthetic:train", dataset_size=1000))


def tiny_config(victim_ckpt: str, **extra) -> ExperimentConfig:
    raw = {
        "name": "http-steal-test",
        "device": "cpu",
        "progress": False,
        "victim": {"label": "tiny", "checkpoint": victim_ckpt},
        "attack": {"name": "stolenencoder", "config": {"arch": "cnn_tiny", "epochs": 1, "batch_size": 32, "cuda_graph": False}},
        "surrogate": {"name": "synthetic", "split": "test", "limit": N_SURROGATE},
        "downstream": [{"name": "digits", "train_limit": TRAIN, "test_limit": TEST}],
        "probe": {"kind": "knn", "config": {"k": 20}},
        "fidelity_limit": 50,
        **extra,
    }
    return ExperimentConfig(**raw)


@pytest.fixture
def server(victim_ckpt, tmp_path):
    """A real uvicorn server on a free loopback port; yields (url, key, ledger)."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    key = ledger.create_account("attacker")
    app_ = create_app(ServiceSettings(checkpoint=victim_ckpt, ledger=str(ledger.path), device="cpu"))
    with serve_in_thread(app_) as url:
        yield url, key, ledger


def test_runner_steals_over_http_and_ledger_matches(server, victim_ckpt, tmp_path):
    url, key, ledger = server
    cfg = tiny_config(victim_ckpt, target={"url": url, "api_key": key, "cache_dir": str(tmp_path / "answers")})
    res = run_experiment(cfg, tmp_path / "run1", echo=lambda m: None)
    (row,) = res["rows"]
    assert row["queries"] == N_SURROGATE
    assert ledger.usage("attacker").queries == N_SURROGATE == sum(r["queries"] for r in res["rows"])
    assert ledger.usage("attacker").cost == pytest.approx(N_SURROGATE * 1.2 / 1000)
    assert {"TA", "SA"} <= set(row["downstream"]["digits"])
    assert (tmp_path / "answers" / "answers.sqlite").exists()  # the answers went through RemoteTarget

    # Rerun in the same run directory: the stolen encoder is reused, nothing is queried.
    run_experiment(cfg, tmp_path / "run1", echo=lambda m: None)
    assert ledger.usage("attacker").queries == N_SURROGATE
    # A fresh run directory and an empty row cache, sharing the answer cache: the encoder is trained again and
    # every answer comes from RemoteTarget's cache (0 queries reported, nothing billed).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEALKIT_CACHE", str(tmp_path / "fresh-cache"))
        res3 = run_experiment(cfg, tmp_path / "run2", echo=lambda m: None)
    assert ledger.usage("attacker").queries == N_SURROGATE and res3["rows"][0]["queries"] == 0
    # A fresh run directory with the shared row cache: the finished row is reused as it was (it cost
    # N_SURROGATE queries, which the report keeps), and nothing is queried or billed again.
    res4 = run_experiment(cfg, tmp_path / "run3", echo=lambda m: None)
    assert res4["rows"][0]["queries"] == N_SURROGATE and ledger.usage("attacker").queries == N_SURROGATE
    assert len(ledger.records("attacker")) == len(ledger.records())  # one account, nothing else billed


def test_http_answers_equal_local_answers(server, victim_ckpt, tmp_path):
    """The stolen encoder trained over HTTP equals the one trained in-process (same seed, bitwise answers)."""
    url, key, _ = server
    remote = run_experiment(tiny_config(victim_ckpt, target={"url": url, "api_key": key}, downstream=[]), tmp_path / "r", echo=lambda m: None)
    local = run_experiment(tiny_config(victim_ckpt, downstream=[]), tmp_path / "l", echo=lambda m: None)
    a, b = (load_encoder(next((tmp_path / d / "rows").glob("*/stolen.safetensors"))) for d in ("r", "l"))
    x = load_dataset("synthetic", "test").images[:16]
    assert remote["rows"][0]["queries"] == local["rows"][0]["queries"] == N_SURROGATE
    assert torch.allclose(embed(a, x), embed(b, x), atol=1e-5)


def test_cli_steal_url_writes_loadable_checkpoint(server, tmp_path, monkeypatch):
    url, key, ledger = server
    out = tmp_path / "stolen" / "enc"
    args = ["steal", "--url", url, "--surrogate", "synthetic:test", "--limit", "40", "--attack", "stolenencoder",
            "--set", "arch=cnn_tiny", "--set", "epochs=1", "--set", "batch_size=16",
            "--set", "cuda_graph=false", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--budget", "100", "--device", "cpu"]
    monkeypatch.setenv("STEALKIT_API_KEY", key)  # the key from the environment
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "queries billed this run: 40" in r.output
    enc = load_encoder(out)
    assert enc.spec.arch == "cnn_tiny" and embed(enc, load_dataset("synthetic", "test").images[:4]).shape == (4, 64)
    assert json.loads(out.with_suffix(".json").read_text())["queries"] == 40
    # Again with the same cache: nothing billed.
    r2 = CliRunner().invoke(app, args)
    assert r2.exit_code == 0, r2.output
    assert "queries billed this run: 0" in r2.output and ledger.usage("attacker").queries == 40
    # Clear failures: a bad key, an unknown attack, a budget too small.
    bad = CliRunner().invoke(app, args + ["--api-key", "sk_0000000000000000_nope"])
    assert bad.exit_code == 2 and "refused the API key" in bad.output
    assert "unknown attack" in CliRunner().invoke(app, [*args[:8], "nope", *args[9:]]).output
    small_args = [*args[:-6], "--cache-dir", str(tmp_path / "c2"), "--budget", "10", "--device", "cpu"]
    small = CliRunner().invoke(app, small_args)
    assert small.exit_code == 2 and "budget" in small.output and ledger.usage("attacker").queries == 40


def _knn_all(train, ytr, test, T=0.1, ncls=10):
    """Weighted kNN over *all* training points (no tie-breaking: order-independent), written out."""
    sim = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    scores = torch.stack([(sim / T).exp()[:, ytr == c].sum(1) for c in range(ncls)], 1)
    return scores.argmax(1)


def test_defence_sweep_honest_ta_matches_independent_computation(victim_ckpt, tmp_path):
    cfg = tiny_config(victim_ckpt, defence={"name": "topk", "k": 64}, sweep={"param": "defence.k", "values": [1, 64]},
                      probe={"kind": "knn", "config": {"k": TRAIN}})
    res = run_experiment(cfg, tmp_path / "sweep", echo=lambda m: None)
    by_k = {r["sweep"]["value"]: r["downstream"]["digits"] for r in res["rows"]}
    ta = by_k[1]["TA"]
    assert by_k[64]["TA_defended"] == pytest.approx(ta)  # k = D keeps everything
    assert by_k[1]["TA_defended"] != pytest.approx(ta)   # an aggressive defence costs honest users

    # Independent: the victim's features, top-1 by hand, the same kNN written out.
    train = load_dataset("digits", "train").sample(TRAIN, seed=0)
    test = load_dataset("digits", "test").sample(TEST, seed=0)
    victim = load_encoder(victim_ckpt)
    ftr, fte = embed(victim, train.images), embed(victim, test.images)

    def top1(f):
        i = f.abs().argmax(1, keepdim=True)
        return torch.zeros_like(f).scatter(1, i, f.gather(1, i))

    acc = lambda tr, te: float((_knn_all(tr, train.labels, te) == test.labels).float().mean())  # noqa: E731
    assert acc(ftr, fte) == pytest.approx(ta, abs=1e-6)
    assert acc(top1(ftr), top1(fte)) == pytest.approx(by_k[1]["TA_defended"], abs=1e-6)
    assert [r["queries"] for r in res["rows"]] == [N_SURROGATE, N_SURROGATE]


def test_quickstart_serve_tiny(tmp_path, capsys):
    from stealkit.cli.common import packaged_config
    from stealkit.cli.quickstart_http import quickstart_over_http

    overrides = [
        "device=cpu", "progress=false", "victim.pretrain.epochs=1", "victim.pretrain.data.limit=128",
        "victim.pretrain.checkpoint_every=1", "attacks.0.config.epochs=1", "attacks.1.config.epochs=1",
        "surrogate.limit=64", f"downstream.0.train_limit={TRAIN}", f"downstream.0.test_limit={TEST}",
        "probe={kind: knn, config: {k: 20}}", "seeds=[0]",  # one seed: the packaged quickstart runs three
    ]
    res = quickstart_over_http(packaged_config("quickstart"), overrides, tmp_path / "qs")
    assert res["ledger"]["match"] and res["ledger"]["runner_queries"] == 128
    (acct,) = res["ledger"]["accounts"]
    assert acct["account"] == "attacker" and acct["queries"] == acct["api_queries"] == 128
    assert Ledger(tmp_path / "qs" / "ledger.sqlite").usage("attacker").queries == 128
    assert "ledger check OK" in capsys.readouterr().out
    # a rerun in the same directory serves on another port: its rows still come from the cache, nothing
    # is stolen or paid again, and the ledger (both accounts) still equals what the runner reports
    again = quickstart_over_http(packaged_config("quickstart"), overrides, tmp_path / "qs")
    out = capsys.readouterr().out
    assert out.count("stolen encoder cached") == 3 and again["ledger"]["match"] and again["ledger"]["runner_queries"] == 128
    assert [a["queries"] for a in again["ledger"]["accounts"]] == [128, 0]

