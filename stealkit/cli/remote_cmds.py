"""`stealkit steal --url ...`: steal a served encoder over HTTP with any registered attack.

    stealkit steal --url http://127.0.0.1:8000 --api-key sk_... --surrogate tiny_imagenet32:train \\
        --limit 2500 --attack stolenencoder --set epochs=100 --set arch=resnet34 --out stolen/enc

The attack sees only a RemoteTarget (batched, retried, answers cached on disk when --cache-dir is
given, hard --budget). The stolen encoder is saved with its attack, surrogate and query count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stealkit.cli.app import app
from stealkit.cli.common import apply_data_root, check_arch, console, fail

SPLIT_PREFIXES = ("folder:", "archive:")


def parse_surrogate(text: str) -> tuple[str, str]:
    """'tiny_imagenet32' -> (name, 'train'); 'synthetic:test' -> ('synthetic', 'test');
    'folder:/data/x' -> ('folder:/data/x', 'train'); 'folder:/data/x:val' -> ('folder:/data/x', 'val')."""
    prefix = next((p for p in SPLIT_PREFIXES if text.startswith(p)), "")
    rest = text[len(prefix):]
    name, sep, split = rest.rpartition(":")
    if not sep or not name or "/" in split or not split:
        return text, "train"
    return prefix + name, split


def make_attacker(attack: str, items: list[str], seed: int):
    """The attack `attack` with the --set KEY=VALUE settings (values read as YAML), checked before any
    query: a bad key, value or architecture is a one-line error and exit 2."""
    from stealkit.attacks import ATTACKS, build_attack
    from stealkit.userinput import UserError, parse_assignments

    if attack not in ATTACKS:
        fail(f"unknown attack {attack!r}; choose one of {', '.join(sorted(ATTACKS))}")
    try:
        conf = dict(parse_assignments(items, example="epochs=10"))
        if "seed" in ATTACKS[attack].Config.model_fields:
            conf.setdefault("seed", seed)
        attacker = build_attack(attack, conf)
        if isinstance(getattr(attacker.config, "arch", None), str):
            check_arch(attacker.config.arch, f"attack {attack!r}: config.arch")
    except UserError as exc:
        fail(str(exc))
    return attacker


@app.command("steal")
def steal(
    url: str = typer.Option(..., "--url", help="base URL of the EaaS API, e.g. http://127.0.0.1:8000"),
    api_key: str = typer.Option(None, "--api-key", envvar="STEALKIT_API_KEY", help="API key (or $STEALKIT_API_KEY)"),
    surrogate: str = typer.Option(..., "--surrogate", help="surrogate dataset NAME[:split] (default split: train)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="surrogate images to use (random subset, by --seed)"),
    attack: str = typer.Option("stolenencoder", "--attack", help="a registered attack (stealkit.attacks.ATTACKS)"),
    set_: list[str] = typer.Option([], "--set", help="attack config KEY=VALUE, repeatable: --set epochs=10"),
    out: Path = typer.Option(..., "--out", help="stolen encoder checkpoint path (.safetensors + .json)"),
    budget: Optional[int] = typer.Option(None, "--budget", help="hard cap on billed queries for this run"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="on-disk cache of answers: a rerun never pays twice"),
    data_root: Optional[str] = typer.Option(None, envvar="STEALKIT_DATA", help="dataset root"),
    device: str = typer.Option("auto", help="device that trains the stolen encoder"),
    seed: int = typer.Option(0, help="seed for the surrogate subset and the attack"),
    batch_size: int = typer.Option(256, "--request-batch", help="images per HTTP request"),
):
    """Steal a served encoder over HTTP with any attack; saves the stolen encoder and prints the bill."""
    import tempfile

    import httpx

    from stealkit.data import DatasetNotFound, load_dataset
    from stealkit.experiment.victims import spec_key
    from stealkit.models.checkpoint import save_encoder
    from stealkit.runtime import pick_device
    from stealkit.targets.base import BudgetExceeded
    from stealkit.targets.remote import RemoteError, RemoteTarget

    if not api_key:
        fail("no API key: pass --api-key or set $STEALKIT_API_KEY")
    attacker = make_attacker(attack, set_, seed)
    apply_data_root(data_root)
    name, split = parse_surrogate(surrogate)
    try:
        data = load_dataset(name, split, root=data_root)
    except (DatasetNotFound, FileNotFoundError, KeyError) as exc:
        fail(f"surrogate {surrogate!r}: {exc}")
    if limit is not None:
        if limit < 1:
            fail(f"--limit must be >= 1, got {limit}")
        if limit < len(data):
            data = data.sample(limit, seed=seed, name=f"{name}:{split}[{limit}]")

    target = RemoteTarget(url, api_key, budget=budget, batch_size=batch_size, cache_dir=cache_dir)
    try:
        before = target.usage()
        model = target.info()
        console.print(
            f"target {url}: {model['model']} ({model['arch']}, dim {model['feature_dim']}, defence {model['defence']}), "
            f"${model['price_per_1000']}/1000 queries; account {before['account']!r} has used {before['queries']} queries"
        )
        console.print(f"stealing with {attack} on {len(data)} images of {data.name}")
        if cache_dir is not None:
            workdir = cache_dir / "work" / spec_key({"url": url, "attack": attack, "config": attacker.config.model_dump(), "surrogate": data.name})
            result = attacker.steal(target, data, device=pick_device(device), workdir=workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="stealkit-steal-") as tmp:
                result = attacker.steal(target, data, device=pick_device(device), workdir=tmp)
        after = target.usage()
    except PermissionError as exc:
        fail(f"{exc} (check --api-key / $STEALKIT_API_KEY)")
    except BudgetExceeded as exc:
        fail(f"stopped: {exc}")
    except (RemoteError, httpx.HTTPError) as exc:
        fail(f"API error: {exc}")
    except ValueError as exc:  # e.g. a surrogate smaller than one batch; answers already paid for stay cached
        fail(f"{attack} failed: {exc}" + ("" if cache_dir else " (pass --cache-dir so a retry does not pay again)"))
    finally:
        target.close()
    path = save_encoder(
        result.encoder, out, attack={"name": attack, "config": attacker.config.model_dump()}, surrogate=data.name,
        queries=result.queries, target_url=url, target_model=model.get("model"), seed=seed,
    )
    billed = after["queries"] - before["queries"]
    cost = after["cost"] - before["cost"]
    console.print(f"stolen encoder saved to {path}")
    console.print(
        f"queries billed this run: {billed} (${cost:.4f}); answered from cache: {target.cache_hits}; "
        f"attack reports {result.queries} queries; account total {after['queries']} queries, ${after['cost']:.4f}"
    )
    if billed != target.queries:
        console.print(f"[yellow]warning[/]: the server billed {billed} queries but the client sent {target.queries} (another client on this account?)")
