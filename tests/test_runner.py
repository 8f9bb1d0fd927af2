"""The experiment runner on tiny CPU problems: run directory contents, reuse of finished work,
per-row reporting of missing datasets, sweeps, config validation."""

import json

import numpy as np
import pytest
import torch
import yaml

from stealkit.experiment.config import ExperimentConfig, load_config, set_dotted
from stealkit.experiment.runner import run_experiment

TINY_VICTIM = {"label": "tiny", "pretrain": {"method": "simclr", "arch": "cnn_tiny", "data": {"name": "synthetic", "limit": 256},
                                             "epochs": 1, "batch_size": 64, "device": "cpu"}}
TINY_ATTACK = {"arch": "cnn_tiny", "epochs": 1, "batch_size": 32}
ACC_TOL = 1e-6  # the probes average hits in float32 (error ~1e-7), far below one test image's 1/100


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


def _spy_probes(monkeypatch):
    """Record what the runner hands the probes and what they return: [(train sets, test sets, test labels, results)]."""
    import stealkit.experiment.runner as runner

    calls, real = [], runner.evaluate_feature_sets

    def spy(tr_f, tr_y, te_f, te_y, *a, **k):
        out = real(tr_f, tr_y, te_f, te_y, *a, **k)
        calls.append((list(tr_f), list(te_f), te_y, out))
        return out

    monkeypatch.setattr(runner, "evaluate_feature_sets", spy)
    return calls


def _hand_accuracy(predictions, labels) -> float:
    """Accuracy by counting: correct predictions / test images, in plain Python."""
    pred, lab = [int(x) for x in predictions], [int(x) for x in labels]
    assert len(pred) == len(lab) > 0
    return sum(a == b for a, b in zip(pred, lab)) / len(lab)


def _hand_topk(features: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k by hand (numpy argsort, not torch.topk): per row keep the k entries of largest |f|, zero the rest."""
    f = features.double().numpy()
    keep = np.argsort(-np.abs(f), axis=1, kind="stable")[:, :k]
    out = np.zeros_like(f)
    rows = np.arange(len(f))[:, None]
    out[rows, keep] = f[rows, keep]
    return torch.from_numpy(out).float()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "cache"))


def test_run_writes_run_directory_and_reuses_work(tmp_path, monkeypatch):
    calls = _spy_probes(monkeypatch)
    messages = []
    res = run_experiment(tiny_config(), tmp_path / "run", echo=messages.append)
    for f in ("config.resolved.yaml", "metrics.jsonl", "results.json", "report.md", "plot.png"):
        assert (tmp_path / "run" / f).exists(), f
    row = res["rows"][0]
    assert row["queries"] == 64 and row["cost"] == pytest.approx(64 * 1.2 / 1000)
    d = row["downstream"]["digits"]
    # TA, SA and SA/TA from accuracies counted by hand on the probes' own predictions vs the digits test labels
    # (drawn again here: the 100-image subset of seed 0); the sets are the victim's then the stolen encoder's
    from stealkit.data import load_dataset

    (_, te_f, te_y, results), = calls
    labels = load_dataset("digits", "test").sample(100, seed=0).labels
    assert torch.equal(torch.as_tensor(te_y), torch.as_tensor(labels)) and len(results) == 2
    ta, sa = _hand_accuracy(results[0]["predictions"], labels), _hand_accuracy(results[1]["predictions"], labels)
    assert d["TA"] == pytest.approx(ta, abs=ACC_TOL) and d["SA"] == pytest.approx(sa, abs=ACC_TOL)
    assert d["SA/TA"] == pytest.approx(sa / ta, rel=ACC_TOL)
    agree = sum(int(a) == int(b) for a, b in zip(results[0]["predictions"], results[1]["predictions"])) / 100
    assert d["agreement"] == pytest.approx(agree, abs=ACC_TOL) and d["test_size"] == 100 and d["train_size"] == 300
    assert -1 <= d["cosine_fidelity"] <= 1
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


def test_defence_rows_report_what_honest_users_keep(tmp_path, monkeypatch):
    """Top-k really reaches the answers: every answer the attacker (defended row) and the honest users receive
    keeps only the k largest-|f| coordinates of the victim's features, as a hand-written top-k (numpy argsort)
    of the encoder called directly gives them; TA_defended is the accuracy counted on the probe trained on
    those honest answers."""
    from stealkit.targets import LocalTarget

    k = 3  # of cnn_tiny's 64 features
    answers, real_embed = [], LocalTarget._embed

    def spy(self, images):
        out = real_embed(self, images)
        answers.append((self.account, self.defence, self.encoder, images.clone(), out.clone()))
        return out

    monkeypatch.setattr(LocalTarget, "_embed", spy)
    calls = _spy_probes(monkeypatch)
    cfg = tiny_config(defences=[None, {"name": "topk", "k": k}])
    res = run_experiment(cfg, tmp_path / "run", echo=lambda m: None)
    clean, defended = res["rows"]
    assert clean["downstream"]["digits"]["TA_defended"] is None
    assert f"topk(k={k})" in defended["label"]

    def received(account, with_defence):
        got = [(enc, x, out) for acc, dfn, enc, x, out in answers if acc == account and (dfn is not None) == with_defence]
        assert got, (account, with_defence)
        return got[0][0], torch.cat([x for _, x, _ in got]), torch.cat([o for _, _, o in got])

    victim, seen, defended_answers = received("attacker", True)
    _, seen_clean, clean_answers = received("attacker", False)
    assert len(seen) == 64 and torch.equal(seen, seen_clean)  # the same surrogate queries in both rows
    with torch.no_grad():
        direct = victim.eval()(seen).float()
    assert torch.allclose(clean_answers, direct, rtol=1e-5, atol=1e-6)  # the clean row's answers are the features
    nonzero = (defended_answers != 0).sum(1)
    assert (nonzero <= k).all() and torch.equal(nonzero, (clean_answers != 0).sum(1).clamp(max=k))
    assert torch.equal(defended_answers, _hand_topk(clean_answers, k))  # exact: top-k copies the values it keeps
    assert torch.allclose(defended_answers, _hand_topk(direct, k), rtol=1e-5, atol=1e-6)

    _, honest_images, honest_answers = received("honest-user", True)
    with torch.no_grad():
        honest_direct = victim(honest_images).float()
    assert ((honest_answers != 0).sum(1) <= k).all() and (honest_answers != 0).sum(1).max() == k
    assert torch.allclose(honest_answers, _hand_topk(honest_direct, k), rtol=1e-5, atol=1e-6)

    # the probe sets: victim, honest users under top-k, the two stolen encoders; accuracies counted by hand
    (_, te_f, te_y, results), = calls
    assert len(results) == 4 and torch.equal(te_f[1], honest_answers[-100:])
    acc = [_hand_accuracy(r["predictions"], te_y) for r in results]
    ta, ta_defended, sa_clean, sa_defended = acc
    for row, sa in ((clean, sa_clean), (defended, sa_defended)):
        d = row["downstream"]["digits"]
        assert d["TA"] == pytest.approx(ta, abs=ACC_TOL) and d["SA"] == pytest.approx(sa, abs=ACC_TOL)
        assert d["SA/TA"] == pytest.approx(sa / ta, rel=ACC_TOL)
    assert defended["downstream"]["digits"]["TA_defended"] == pytest.approx(ta_defended, abs=ACC_TOL)


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
