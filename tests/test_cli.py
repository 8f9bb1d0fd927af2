"""The CLI as a user drives it: pretrain -> evaluate on a tiny CPU config; every shipped config parses."""

import glob
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stealkit.cli import app
from stealkit.experiment.config import load_config
from stealkit.models.checkpoint import load_encoder, read_sidecar
from stealkit.pretrain.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "configs" / "victims" / "*.yaml"))))
def test_victim_configs_parse(path):
    cfg = PretrainConfig(**yaml.safe_load(Path(path).read_text()))
    assert cfg.arch in ("resnet18", "cnn_tiny")


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(str(REPO / "configs" / "*.yaml"))))
def test_experiment_configs_parse(path):
    cfg = load_config(path)
    assert cfg.rows(), path


def test_pretrain_then_evaluate(tmp_path, monkeypatch):
    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    out = tmp_path / "victim"
    r = runner.invoke(app, ["pretrain", "--config", str(REPO / "configs/victims/tiny_cpu.yaml"), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    meta = read_sidecar(out)
    assert meta["spec"]["arch"] == "cnn_tiny" and meta["dataset"].startswith("synthetic") and meta["dataset_size"] == 512
    assert len(meta["log"]) == 2 and "knn_acc" in meta["log"][-1]
    assert not out.with_suffix(".state.pt").exists()  # finished runs clean their resume state
    load_encoder(out.with_suffix(".safetensors"))
    js = tmp_path / "acc.json"
    r = runner.invoke(app, ["evaluate", str(out.with_suffix(".safetensors")), "-d", "digits", "--probe", "linear", "--epochs", "20", "--out", str(js)])
    assert r.exit_code == 0, r.output
    acc = json.loads(js.read_text())["accuracy"]
    assert 0.1 < list(acc.values())[0]["digits"] <= 1.0


def test_unknown_config_key_fails_with_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("victim: {checkpoint: x.safetensors}\nattack: {nme: stolenencoder}\n")
    r = CliRunner().invoke(app, ["run", str(bad)])
    assert r.exit_code == 2 and "nme" in r.output
