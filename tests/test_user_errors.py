"""A new user's mistakes, each of which once gave a traceback, an exit code 0 or a number from work that did
not run: now one or two lines that say what was wrong and what to do, a non-zero exit, and nothing paid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from stealkit.cli import app
from stealkit.models.checkpoint import save_encoder
from stealkit.models.encoder import build_encoder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def victim(tmp_path) -> str:
    torch.manual_seed(0)
    return str(save_encoder(build_encoder("cnn_tiny"), tmp_path / "victim", dataset="synthetic:train", dataset_size=500))


def config(tmp_path, victim, **over) -> Path:
    raw = {"name": "mistake", "device": "cpu", "victim": {"checkpoint": victim},
           "attack": {"name": "stolenencoder", "config": {"arch": "cnn_tiny", "epochs": 1, "batch_size": 32}},
           "surrogate": {"name": "synthetic", "split": "test", "limit": 64},
           "downstream": [{"name": "digits", "train_limit": 200, "test_limit": 100}], "probe": {"kind": "knn"}, **over}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def short_failure(result, *needles: str) -> None:
    """Non-zero exit, one or two lines, no traceback, at most a SystemExit, each needle in the message."""
    out = result.output
    assert result.exit_code != 0, out
    assert 1 <= len(out.strip().splitlines()) <= 2, out
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr, out
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, out)
    for n in needles:
        assert n in out, (n, out)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_pretrain_with_a_negative_epoch_count_writes_nothing(tmp_path):
    out = tmp_path / "victim"
    r = invoke("pretrain", "--config", REPO / "configs/victims/tiny_cpu.yaml", "--out", out, "--set", "epochs=-1", "--device", "cpu")
    short_failure(r, "epochs", "greater than or equal to 1")
    assert not out.with_suffix(".safetensors").exists() and not list(tmp_path.glob("victim*"))


def test_run_with_a_negative_epoch_count_fails_before_any_work(tmp_path, victim):
    r = invoke("run", config(tmp_path, victim), "--run-dir", tmp_path / "run", "--set", "attack.config.epochs=-1")
    short_failure(r, "epochs")
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_typo_inside_attack_config_says_did_you_mean(tmp_path, victim):
    r = invoke("run", config(tmp_path, victim), "--run-dir", tmp_path / "run", "--set", "attack.config.epoch=3")
    short_failure(r, "epoch", "did you mean 'epochs'")


def test_broken_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nvictim: {checkpoint: a\nattack: [\n")
    r = invoke("run", p)
    short_failure(r, "not valid YAML", "line")


@pytest.mark.parametrize("where,value,needle", [("attack.name", "stolenencodr", "did you mean 'stolenencoder'"),
                                                ("defence", "{name: topkk, k: 3}", "did you mean 'topk'"),
                                                ("defence", "{name: topk, k: 0}", "greater than or equal to 1")])
def test_unknown_names_and_bad_values_in_any_row_fail_in_one_line(tmp_path, victim, where, value, needle):
    r = invoke("run", config(tmp_path, victim), "--run-dir", tmp_path / "run", "--set", f"{where}={value}")
    short_failure(r, needle)
    assert not (tmp_path / "run").exists()


def test_set_without_a_value(tmp_path, victim):
    r = invoke("run", config(tmp_path, victim), "--set", "epochs")
    short_failure(r, "KEY=VALUE")


def no_queries(monkeypatch) -> None:
    """Any RemoteTarget made from here on fails the test: a settings mistake must be reported before a query."""
    import stealkit.targets.remote as remote

    def refuse(*a, **k):
        raise AssertionError("steal reached for the network before its settings were checked")

    monkeypatch.setattr(remote.RemoteTarget, "__init__", refuse)


@pytest.mark.parametrize("item,needles", [
    ("epochs=-1", ("error: attack 'stolenencoder': config.epochs: Input should be greater than or equal to 1 (got -1)",)),
    ("epochs", ("--set 'epochs': use KEY=VALUE, e.g. --set epochs=10",)),
    ("epochs=[1,", ("--set 'epochs=[1,': the value is not valid YAML",)),
    ("epoch=3", ("config.epoch: unknown setting", "did you mean 'epochs'")),
    ("arch=resnet43", ("config.arch: unknown architecture 'resnet43' (did you mean 'resnet34'?)",)),
])
def test_steal_with_a_bad_set_fails_before_any_query(tmp_path, monkeypatch, item, needles):
    no_queries(monkeypatch)
    r = invoke("steal", "--url", "http://127.0.0.1:9", "--api-key", "sk_test", "--surrogate", "synthetic:test", "--limit", 64,
               "--out", tmp_path / "stolen", "--device", "cpu", "--set", item)
    short_failure(r, *needles)
    assert r.exit_code == 2 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("serve", [False, True])
def test_quickstart_with_a_negative_epoch_count_fails_before_any_work(tmp_path, serve):
    flags = ["--serve"] if serve else []
    r = invoke("quickstart", *flags, "--run-dir", tmp_path / "qs", "--set", "attacks.0.config.epochs=-1")
    short_failure(r, "rows 1, 2, 3 (StolenEncoder): attack 'stolenencoder': config.epochs: Input should be greater than or equal to 1 (got -1)")
    assert r.exit_code == 2 and not (tmp_path / "qs").exists()


def test_run_with_an_unknown_architecture_fails_before_any_work(tmp_path, victim):
    r = invoke("run", config(tmp_path, victim), "--run-dir", tmp_path / "run", "--set", "attack.config.arch=resnt18")
    short_failure(r, "row 1 (stolenencoder): attack.config.arch: unknown architecture 'resnt18' (did you mean 'resnet18'?)")
    assert not (tmp_path / "run").exists()


def test_pretrain_with_an_unknown_architecture_writes_nothing(tmp_path):
    out = tmp_path / "victim"
    r = invoke("pretrain", "--config", REPO / "configs/victims/tiny_cpu.yaml", "--out", out, "--set", "arch=cnn_tin", "--device", "cpu")
    short_failure(r, "arch: unknown architecture 'cnn_tin' (did you mean 'cnn_tiny'?)")
    assert not list(tmp_path.glob("victim*"))


def test_a_run_whose_every_downstream_set_is_missing_fails(tmp_path, victim):
    p = config(tmp_path, victim, downstream=[{"name": f"folder:{tmp_path / 'nowhere'}"}])
    r = invoke("run", p, "--run-dir", tmp_path / "run")
    assert r.exit_code != 0 and "no downstream set could be loaded" in r.output and "Traceback" not in r.output


def test_a_missing_victim_checkpoint_fails_before_work(tmp_path):
    p = config(tmp_path, str(tmp_path / "no_such_victim"))
    r = invoke("run", p, "--run-dir", tmp_path / "run")
    short_failure(r, "victim checkpoint", "not found")
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_sweep_value_below_the_batch_size_fails_before_queries_are_paid(tmp_path, victim):
    p = config(tmp_path, victim, sweep={"param": "surrogate.limit", "values": [64, 16]})
    r = invoke("run", p, "--run-dir", tmp_path / "run")
    short_failure(r, "surrogate.limit=16", "smaller than one batch")
    assert not (tmp_path / "run").exists()


def test_evaluate_without_data_fails_and_stays_offline(tmp_path, victim, monkeypatch):
    monkeypatch.delenv("STEALKIT_DATA", raising=False)
    import stealkit.data.torchvision_sets as tv

    def no_network(*a, **k):
        raise AssertionError("evaluate reached for the network")

    monkeypatch.setattr(tv.TorchvisionSource, "build", no_network)
    r = invoke("evaluate", victim, "-d", "mnist", "--data-root", tmp_path / "empty")
    assert r.exit_code != 0 and "no downstream set could be loaded" in r.output


def test_a_flat_folder_is_not_its_own_test_split(tmp_path):
    from PIL import Image

    from stealkit.data import DatasetNotFound, load_dataset

    for c in ("a", "b"):
        (tmp_path / "flat" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "flat" / c / f"{i}.png")
    assert len(load_dataset(f"folder:{tmp_path / 'flat'}", "train")) == 6
    with pytest.raises(DatasetNotFound, match="flat ImageFolder"):
        load_dataset(f"folder:{tmp_path / 'flat'}", "test")


def test_discovery_commands():
    import stealkit

    assert invoke("--version").output.strip() == f"stealkit {stealkit.__version__}"
    for what, needle in (("attacks", "cont-steal-fixed-view"), ("defences", "poisoning"), ("probes", "mlp"),
                         ("architectures", "timm:NAME"), ("losses", "infonce")):
        r = invoke("list", what)
        assert r.exit_code == 0 and needle in r.output, r.output
    r = invoke("schema")
    assert r.exit_code == 0 and '"normalize_answers"' in r.output


def test_load_config_names_every_unknown_architecture_before_any_work(tmp_path, victim):
    """The Python API checks architectures as the CLI does: a victim to pre-train, a row's attack and a
    poisoning shadow's trainer, each with the closest registry name (no victim trained, no shadow, no query)."""
    from stealkit.experiment.config import load_config
    from stealkit.userinput import UserError

    shadow = {"victim": {"checkpoint": str(victim)}, "data": {"name": "synthetic", "split": "train", "limit": 64},
              "config": {"arch": "resnet1", "epochs": 1}}
    p = config(tmp_path, victim, attack={"name": "stolenencoder", "config": {"arch": "cnn_tin", "epochs": 1, "batch_size": 32}},
               defence={"name": "poisoning", "epsilon": 1.0, "norm": "l2", "shadow": shadow})
    raw = yaml.safe_load(p.read_text())
    raw["victims"] = [raw.pop("victim"), {"label": "mine", "pretrain": {"arch": "resnet5O", "data": {"name": "synthetic"}, "epochs": 1}}]
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as err:
        load_config(p)
    msg = str(err.value)
    assert "attack.config.arch: unknown architecture 'cnn_tin' (did you mean 'cnn_tiny'?)" in msg
    assert "victim 'mine': pretrain.arch: unknown architecture 'resnet5O' (did you mean 'resnet50'?)" in msg
    assert "shadow config.arch: unknown architecture 'resnet1' (did you mean 'resnet18'?)" in msg
    # and a config whose names are all known passes the same check
    ok = dict(shadow, config={"arch": "cnn_tiny", "epochs": 1})
    load_config(config(tmp_path, victim, defence={"name": "poisoning", "epsilon": 1.0, "norm": "l2", "shadow": ok}))
