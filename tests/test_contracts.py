"""The plug-in contract, for every registered attack, defence, probe and stealing loss: each builds from its
Config alone, rejects an unknown key with a message naming it, rejects an out-of-range value, and
round-trips its config; a defence has the same identity however its settings were given; `stealkit list`
describes each in one line of prose."""

from __future__ import annotations

import re

import pytest
import torch

from stealkit.attacks import ATTACKS, build_attack
from stealkit.cli.list_cmds import attack_rows, defence_rows, loss_rows, probe_rows
from stealkit.defences import DEFENCES, build_defence
from stealkit.losses import STEAL_LOSSES, build_loss
from stealkit.models.checkpoint import save_encoder
from stealkit.models.encoder import build_encoder
from stealkit.probes.evaluate import PROBES, probe_config_class
from stealkit.userinput import UserError


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_contract(name):
    cls = ATTACKS[name]
    attack = build_attack(name)  # from its Config's defaults alone
    assert isinstance(attack, cls) and attack.name == name
    again = build_attack(name, attack.config.model_dump())
    assert again.config == attack.config  # round trip
    with pytest.raises(UserError, match="bogus_setting"):
        build_attack(name, {"bogus_setting": 1})
    for field in [f for f in ("epochs", "batch_size", "lr") if f in cls.Config.model_fields]:
        with pytest.raises(UserError, match=field):
            build_attack(name, {field: -1})
    assert isinstance(attack.describe(), str)


@pytest.fixture(scope="module")
def shadow_path(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_encoder(build_encoder("cnn_tiny"), tmp_path_factory.mktemp("shadow") / "shadow"))


def minimal_settings(name: str, shadow_path: str) -> dict:
    """The settings a defence cannot do without (its Config's required fields)."""
    return {"topk": {"k": 5}, "noise": {"sigma": 0.1, "seed": 0}, "poisoning": {"shadow": shadow_path, "epsilon": 0.5}}.get(name, {})


@pytest.mark.parametrize("name", sorted(DEFENCES))
def test_defence_contract(name, shadow_path):
    cls = DEFENCES[name]
    settings = minimal_settings(name, shadow_path)
    required = {k for k, f in cls.Config.model_fields.items() if f.is_required()}
    assert required <= set(settings), f"add {name}'s required settings to minimal_settings"
    from_spec = build_defence({"name": name, **settings})
    direct = cls(**settings)
    assert from_spec.identity() == direct.identity() and from_spec.identity()["name"] == name
    rebuilt = cls(**{k: v for k, v in direct.config.model_dump().items()})
    assert rebuilt.identity() == direct.identity()  # round trip through its config
    with pytest.raises(UserError, match="bogus_setting"):
        build_defence({"name": name, **settings, "bogus_setting": 1})
    out = direct(torch.randn(3, 64), images=torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8), account="a")
    assert out.shape == (3, 64)


def test_defence_out_of_range_values_fail_when_built(shadow_path):
    for spec, field in (({"name": "topk", "k": 0}, "k"), ({"name": "rounding", "m": -1}, "m"), ({"name": "noise", "sigma": -1}, "sigma"),
                        ({"name": "poisoning", "shadow": shadow_path, "epsilon": -1}, "epsilon"),
                        ({"name": "coverage", "num_planes": 0}, "num_planes")):
        with pytest.raises(UserError, match=field):
            build_defence(spec)


@pytest.mark.parametrize("kind", PROBES)
def test_probe_contract(kind):
    cls = probe_config_class(kind)
    cfg = cls.make()
    assert cls.make(**cfg.model_dump()) == cfg
    with pytest.raises(ValueError, match="bogus_setting"):
        cls.make(bogus_setting=1)
    field = next(f for f in ("epochs", "k") if f in cls.model_fields)
    with pytest.raises(ValueError, match=field):
        cls.make(**{field: -1})


@pytest.mark.parametrize("name", sorted(STEAL_LOSSES))
def test_loss_contract(name):
    loss = build_loss(name)
    assert loss.stolen_views and loss.target_views
    s, t = torch.randn(4, 8).abs(), torch.randn(4, 8).abs()
    views = {"clean": s, "aug": s.flip(0)}
    total, l1, l2 = loss(views, {"clean": t, "aug": t.flip(0)})
    assert total.ndim == 0 and torch.isfinite(total)
    with pytest.raises(Exception, match="bogus_setting"):
        build_loss(name, {"bogus_setting": 1})


LISTED = {"attack": (ATTACKS, attack_rows), "defence": (DEFENCES, defence_rows), "loss": (STEAL_LOSSES, loss_rows),
          "probe": (PROBES, probe_rows)}
CONFIG_TEXT = re.compile(r"^(?i:config|settings?)\b|\b\w*Config\b|\b\w+=[^\s=]")  # "Config: any ...", "PretrainConfig", "lr=0.1"


@pytest.mark.parametrize("kind", sorted(LISTED))
def test_stealkit_list_describes_every_registered_name_in_one_line(kind):
    """What `stealkit list <kind>s` prints in its "what" column: one line of prose for every registered name,
    not empty and not config text (the settings have a column of their own)."""
    registry, rows = LISTED[kind]
    described = {name: what for name, what, _ in rows()}
    assert set(described) == set(registry)
    bad = {name: what for name, what in described.items() if not what.strip() or "\n" in what or CONFIG_TEXT.search(what)}
    assert not bad, f"give these {kind}s a one-line description (the first paragraph of the class docstring): {bad}"
