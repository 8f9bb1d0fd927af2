"""Discovery: `stealkit list attacks|defences|probes|architectures|losses` (from the registries, with every
setting and its default), `stealkit schema` (the JSON schema of a config) and `stealkit --version`."""

from __future__ import annotations

import inspect
import json
import sys
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from stealkit.cli.app import app
from stealkit.cli.common import console, fail

list_app = typer.Typer(help="What stealkit knows: attacks, defences, probes, architectures, losses — with their settings and defaults.",
                       no_args_is_help=True)
app.add_typer(list_app, name="list")


PROBE_DESCRIPTIONS = {
    "mlp": "the StolenEncoder paper's MLP classifier (Section V-A 3) as the authors released it: L2-normalised features, Dropout(0.5)",
    "mlp-raw": "the same MLP on raw features without dropout (stealkit's earlier probe)",
    "linear": "multinomial logistic regression (Adam or L-BFGS)",
    "knn": "weighted kNN on L2-normalised features (InstDisc/SimCLR monitor)",
}


def describe(cls) -> str:
    """A registered class in one line: the first paragraph of its own docstring, else of its module's."""
    for doc in (cls.__dict__.get("__doc__"), sys.modules[cls.__module__].__doc__):
        paragraph = inspect.cleandoc(doc or "").split("\n\n")[0]
        if paragraph:
            return " ".join(paragraph.split())
    return ""


def _pydantic_settings(model, fixed: dict | None = None) -> str:
    """name=default for every setting; a registered variant's fixed settings as name=value (fixed)."""
    parts = []
    for name, f in model.model_fields.items():
        if fixed and name in fixed:
            parts.append(f"{name}={fixed[name]!r} (fixed)")
            continue
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        parts.append(f"{name}={default}")
    return ", ".join(parts)


def attack_rows() -> list[tuple[str, str, str]]:
    from stealkit.attacks import ATTACKS

    return [(n, describe(c), _pydantic_settings(c.Config, c.fixed)) for n, c in sorted(ATTACKS.items())]


def defence_rows() -> list[tuple[str, str, str]]:
    from stealkit.defences import DEFENCES

    return [(n, describe(c), _pydantic_settings(c.Config)) for n, c in sorted(DEFENCES.items())]


def loss_rows() -> list[tuple[str, str, str]]:
    from stealkit.losses import STEAL_LOSSES

    return [(n, describe(c), _pydantic_settings(c.Config)) for n, c in sorted(STEAL_LOSSES.items())]


def probe_rows() -> list[tuple[str, str, str]]:
    from stealkit.probes.evaluate import PROBES, probe_config_class

    return [(k, PROBE_DESCRIPTIONS.get(k, ""), _pydantic_settings(probe_config_class(k))) for k in PROBES]


def _table(title: str, rows: list[tuple[str, str, str]]) -> None:
    t = Table(title=title, show_lines=True)
    t.add_column("name", no_wrap=True)
    t.add_column("what")
    t.add_column("settings (defaults)")
    for r in rows:
        t.add_row(*(escape(x) for x in r))
    console.print(t)


@list_app.command("attacks")
def list_attacks():
    """Registered attacks (`attack: {name: ..., config: {...}}` in a config)."""
    _table("attacks", attack_rows())


@list_app.command("defences")
def list_defences():
    """Registered defences (`defence: {name: ..., <settings>}`; `stealkit serve --defence NAME --defence-arg K=V`)."""
    _table("defences", defence_rows())


@list_app.command("losses")
def list_losses():
    """Stealing losses, one per file under stealkit/losses (the building blocks of the attacks)."""
    _table("stealing losses", loss_rows())


@list_app.command("probes")
def list_probes():
    """Downstream probes (`probe: {kind: ..., config: {...}}`)."""
    _table("probes", probe_rows())


@list_app.command("architectures")
def list_architectures(
    timm_filter: Optional[str] = typer.Option(None, "--timm", help="also list timm models matching this pattern (e.g. 'efficientnet_lite*')"),
    torchvision: bool = typer.Option(False, "--torchvision", help="also list torchvision's classification models"),
):
    """Encoder architectures `stealkit import --arch` and configs take, with the input size and normalisation they expect."""
    from stealkit.models.architectures import ARCHITECTURES, arch_info

    rows = []
    for name in ARCHITECTURES:
        info = arch_info(name)
        rows.append((name, info["note"], f"input {info['input_size']} px, mean/std {info['normalisation']}"))
    rows.append(("torchvision:NAME", "any torchvision classification model without its last Linear layer (pooled features)",
                 "input 224 px (ImageNet weights), mean/std imagenet"))
    rows.append(("timm:NAME", "any timm model with num_classes=0 (pooled features); needs timm", "input and mean/std: the model's pretrained config"))
    if torchvision:
        import torchvision.models as tvm

        for n in tvm.list_models(module=tvm):
            rows.append((f"torchvision:{n}", "torchvision", "input 224 px, mean/std imagenet"))
    if timm_filter:
        try:
            import timm
        except ImportError:
            fail("--timm needs timm: pip install timm")
        for n in timm.list_models(timm_filter):
            info = arch_info(f"timm:{n}")
            rows.append((f"timm:{n}", "timm", f"input {info['input_size']} px, mean {info['mean']}, std {info['std']}"))
    _table("architectures", rows)


@app.command("schema")
def schema(
    kind: str = typer.Argument("experiment", help="experiment | pretrain | serve"),
):
    """Print the JSON schema of a config file (every key, its type and default)."""
    from stealkit.experiment.config import ExperimentConfig
    from stealkit.pretrain.config import PretrainConfig
    from stealkit.service.settings import ServiceSettings

    models = {"experiment": ExperimentConfig, "pretrain": PretrainConfig, "serve": ServiceSettings}
    if kind not in models:
        fail(f"unknown schema {kind!r}; choose one of {', '.join(models)}")
    typer.echo(json.dumps(models[kind].model_json_schema(), indent=2))
