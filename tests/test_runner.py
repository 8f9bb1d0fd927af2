"""The experiment runner on tiny CPU problems: run directory contents, reuse of finished work,
per-row reporting of missing datasets, sweeps, config validation."""

import json

import pytest
import yaml

from stealkit.experiment.config import ExperimentConfig, load_config, set_dotted
from stealkit.experiment.runner import run_experiment

TINY_VICTIM = {"label": "tiny", "pretrain": {"method": "simclr", "arch": "cnn_tiny", "data": {"name": "synthetic", "limit": 256},
                                             "epochs": 1, "batch_size": 64, "device": "cpu"}}
TINY_ATTACK = {"arch": "cnn_tiny", "epochs": 1, "batch_size": 32}


def tiny_config(**over) -> ExperimentConfig:
    raw = {
        "name": "tiny",
        "device": "cpu",
        "victim": TINY_VICTIM,
        "attack": {"name": "stolenencoder", "config": TINY_ATTACK},
        "surrogate": {"name": "synthetic", "split": "test", "limit": 64},
        "downstream": [{"name": "digits", "train_limit": 300, "test_limit": 100}],
        "probe": {"kind": "linear", "config": {"epochs": 5}},
        "progress": False,
        **over,
    }
    return ExperimentConfig(**raw)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "cache"))


def test_run_writes_run_directory_and_reuses_work(tmp_path):
    messages = []
    res = run_experiment(tiny_config(), tmp_path / "run", echo=messages.append)
    for f in ("config.resolved.yaml", "metrics.jsonl", "results.json", "report.md", "plot.png"):
        assert (tmp_path / "run" / f).exists(), f
    row = res["rows"][0]
    assert row["queries"] == 64 and row["cost"] == pytest.approx(64 * 1.2 / 1000)
    d = row["downstream"]["digits"]
    assert 0 <= d["TA"] <= 1 and 0 <= d["SA"] <= 1 and d["SA/TA"] == pytest.approx(d["SA"] / d["TA"])
    assert -1 <= d["cosine_fidelity"] <= 1 and 0 <= d["agreement"] <= 1
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["rows"][0]["queries"] == 64 and "environment" in saved and saved["complete"] is True
    assert "| tiny | stolenencoder | digits |" in (tmp_path / "run" / "report.md").read_text()
    # a rerun pays nothing and trains nothing: victim and stolen encoder come from their caches
    messages.clear()
    again = run_experiment(tiny_config(), tmp_path / "run", echo=messages.append)
    assert any("cached" in m and "victim" in m for m in messages)
    assert any("stolen encoder cached" in m for m in messages)
    assert again["rows"][0]["downstream"]["digits"]["SA"] == pytest.approx(d["SA"])


def test_a_rerun_with_another_seed_reuses_nothing_stale(tmp_path):
    """Reference: the same seed-1 config run in a fresh directory. Rerunning it in a directory that
    holds a seed-0 run must give the same numbers (no seed-0 stolen encoder, no seed-0 probe subset)."""
    knn = {"kind": "knn", "config": {"k": 10}}  # learns in no time (the 5-epoch linear probe stays at chance)
    run_experiment(tiny_config(seed=0, probe=knn), tmp_path / "shared")
    messages = []
    reused = run_experiment(tiny_config(seed=1, probe=knn), tmp_path / "shared", echo=messages.append)
    fresh = run_experiment(tiny_config(seed=1, probe=knn), tmp_path / "fresh")
    assert fresh["rows"][0]["downstream"]["digits"]["TA"] > 0.3  # far above chance: a stale subset would show
    assert not any("stolen encoder cached" in m for m in messages)
    a, b = reused["rows"][0]["downstream"]["digits"], fresh["rows"][0]["downstream"]["digits"]
    for k in ("TA", "SA", "agreement", "cosine_fidelity"):
        assert a[k] == pytest.approx(b[k]), k
    budgeted = run_experiment(tiny_config(seed=1, budget=64, probe=knn), tmp_path / "shared", echo=messages.append)
    assert budgeted["rows"][0]["key"] != reused["rows"][0]["key"]


def test_missing_dataset_is_reported_per_row_not_a_crash(tmp_path):
    missing = {"label": "nowhere", "pretrain": {**TINY_VICTIM["pretrain"], "data": {"name": "cifar10", "root": str(tmp_path / "empty")}}}
    cfg = tiny_config(victim=None, victims=[missing, TINY_VICTIM],
                      downstream=[{"name": "digits", "train_limit": 300, "test_limit": 100}, {"name": "svhn", "root": str(tmp_path / "empty")}])
    res = run_experiment(cfg, tmp_path / "run", echo=lambda m: None)
    assert [f["label"] for f in res["failures"]] == ["stolenencoder"]
    assert str(tmp_path / "empty") in res["failures"][0]["error"]
    assert len(res["rows"]) == 1 and "digits" in res["rows"][0]["downstream"]
    assert res["missing_downstream"][0]["dataset"] == "svhn"
    assert "SKIPPED" in (tmp_path / "run" / "report.md").read_text()


def test_a_run_cut_off_midway_leaves_partial_results(tmp_path, monkeypatch):
    import stealkit.experiment.runner as runner

    def boom(*a, **k):
        raise KeyboardInterrupt  # e.g. a time limit hitting during the probes

    monkeypatch.setattr(runner, "evaluate_downstream", boom)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(tiny_config(), tmp_path / "run", echo=lambda m: None)
    partial = json.loads((tmp_path / "run" / "results.json").read_text())
    assert partial["complete"] is False and partial["rows"][0]["queries"] == 64


def test_sweep_gives_one_row_per_value_and_a_plot(tmp_path):
    cfg = tiny_config(sweep={"param": "attack.config.lam", "values": [0, 20]})
    res = run_experiment(cfg, tmp_path / "run", echo=lambda m: None)
    assert [r["sweep"]["value"] for r in res["rows"]] == [0, 20]
    assert all(e["l2"] == 0.0 for e in json.loads((tmp_path / "run" / "rows" / res["rows"][0]["key"] / "steal.json").read_text())["log"])
    assert (tmp_path / "run" / "plot.png").stat().st_size > 1000


def test_defence_rows_report_what_honest_users_keep(tmp_path):
    cfg = tiny_config(defences=[None, {"name": "topk", "k": 1}])
    res = run_experiment(cfg, tmp_path / "run", echo=lambda m: None)
    clean, defended = res["rows"]
    assert clean["downstream"]["digits"]["TA_defended"] is None
    assert defended["downstream"]["digits"]["TA_defended"] is not None
    assert "topk(k=1)" in defended["label"]


def test_config_errors_are_loud(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"victim": TINY_VICTIM, "attak": {}}))
    with pytest.raises(Exception, match="attak"):
        load_config(p)
    with pytest.raises(Exception, match="exactly one"):
        ExperimentConfig(victim={"label": "x"})
    p.write_text(yaml.safe_dump({"victim": TINY_VICTIM}))
    cfg = load_config(p, ["attack.config.epochs=3", "surrogate.limit=100"])
    assert cfg.attack_list()[0].config == {"epochs": 3} and cfg.surrogate.limit == 100


def test_set_dotted_walks_lists():
    d = {"attacks": [{"config": {}}, {"config": {"a": 1}}]}
    set_dotted(d, "attacks.1.config.a", 5)
    assert d["attacks"][1]["config"]["a"] == 5


def test_pretrain_encoder_baseline_uses_the_attackers_seed_not_the_victims():
    """Table X's pre-training-encoder copies the victim's SimCLR settings, but not its seed: with the
    victim's seed and architecture it would start from the victim's own initial weights."""
    from stealkit.experiment.runner import attack_config

    for seed in (0, 7):  # 0: the experiment's seed equals the victim's (both defaults)
        cfg = tiny_config(seed=seed, attack={"name": "pretrain-encoder", "config": {"epochs": 1}})
        row = cfg.rows()[0]
        conf = attack_config(row)
        assert row.victim["pretrain"]["seed"] == 0 and conf["seed"] != 0
        assert conf["method"] == "simclr" and conf["epochs"] == 1 and "device" not in conf and "data" not in conf
    explicit = tiny_config(attack={"name": "pretrain-encoder", "config": {"epochs": 1, "seed": 5}})
    assert attack_config(explicit.rows()[0])["seed"] == 5


def test_cached_simclr_victims_keep_their_key():
    """Adding a MoCo-only setting must not orphan cached SimCLR victims (hours of GPU time each):
    c6ca6c3de79e is the key of the default CIFAR-10 SimCLR victim as computed before moco_bn_splits
    existed (commit a3b1cd1)."""
    from stealkit.experiment.victims import victim_key
    from stealkit.pretrain.config import PretrainConfig

    assert victim_key(PretrainConfig()) == "c6ca6c3de79e"
    assert victim_key(PretrainConfig(method="moco")) != victim_key(PretrainConfig(method="moco", moco_bn_splits=1))
