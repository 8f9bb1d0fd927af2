"""`stealkit pretrain --config ...` and `stealkit evaluate CHECKPOINT ...`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from stealkit.cli.app import app
from stealkit.cli.common import apply_data_root, check_arch, console, fail


@app.command()
def pretrain(
    config: Path = typer.Option(..., "--config", help="YAML with a PretrainConfig (or an experiment config's victim.pretrain)"),
    out: Path = typer.Option(..., "--out", help="checkpoint path (writes OUT.safetensors + OUT.json)"),
    set_: list[str] = typer.Option([], "--set", help="override a key: --set epochs=100"),
    data_root: Optional[str] = typer.Option(None, envvar="STEALKIT_DATA", help="dataset root"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
):
    """Pre-train a victim encoder with SimCLR or MoCo v2; resumes from OUT.state.pt after an interruption."""
    import time

    import yaml
    from pydantic import ValidationError

    from stealkit.experiment.config import set_dotted
    from stealkit.experiment.victims import load_data
    from stealkit.models.checkpoint import save_encoder
    from stealkit.pretrain.config import PretrainConfig
    from stealkit.pretrain.trainer import knn_monitor
    from stealkit.pretrain.trainer import pretrain as run_pretrain

    apply_data_root(data_root)
    from stealkit.userinput import UserError, describe_with_fields, parse_assignments

    try:
        raw = yaml.safe_load(config.read_text()) or {}
        raw = raw.get("victim", {}).get("pretrain", raw) if "victim" in raw else raw
        for k, v in parse_assignments(set_, example="epochs=100"):
            set_dotted(raw, k, v)
    except (OSError, yaml.YAMLError, UserError) as exc:
        fail(f"bad pretrain config {config}: {' '.join(str(exc).split())[:300]}")
    raw.setdefault("device", device)
    try:
        cfg = PretrainConfig(**raw)
    except ValidationError as exc:
        fail(f"bad pretrain config {config}: {describe_with_fields(exc, PretrainConfig)}")
    try:
        check_arch(cfg.arch)
    except UserError as exc:
        fail(f"bad pretrain config {config}: {exc}")
    data = load_data(cfg.data, data_root)
    monitor = None
    if cfg.knn_data is not None:
        tr = load_data(cfg.knn_data, data_root)
        te = load_data(cfg.knn_data.model_copy(update={"split": "test", "limit": 2000}), data_root)
        monitor = knn_monitor(tr.images, tr.labels, te.images, te.labels, k=cfg.knn_k)
    state = out.with_suffix(".state.pt")
    console.print(f"pre-training {cfg.method} {cfg.arch} on {data.name}: {len(data)} images, {cfg.epochs} epochs (state: {state})")
    t0 = time.perf_counter()
    log_path = out.with_suffix(".log.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)

    def log_fn(entry):
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    encoder, log = run_pretrain(data.images, cfg, state_path=state, monitor=monitor, log_fn=log_fn)
    path = save_encoder(encoder, out, train_config=cfg.model_dump(), dataset=data.name, dataset_size=len(data), seed=cfg.seed, seconds=time.perf_counter() - t0, log=log)
    state.unlink(missing_ok=True)
    console.print(f"saved {path} (+ .json sidecar); last epoch: {log[-1]}")


@app.command()
def evaluate(
    checkpoint: list[Path] = typer.Argument(..., help="encoder checkpoint(s) (.safetensors with .json sidecar; see stealkit import)"),
    downstream: list[str] = typer.Option(["mnist", "gtsrb"], "--downstream", "-d", help="downstream dataset(s)"),
    probe: str = typer.Option("mlp", help="mlp (released: normalised features, dropout 0.5) | mlp-raw | linear | knn"),
    epochs: Optional[int] = typer.Option(None, min=1, help="probe epochs (mlp default 500, the paper's)"),
    train_limit: Optional[int] = typer.Option(None, min=1, help="use a random subset of this many downstream training images"),
    test_limit: Optional[int] = typer.Option(None, min=1, help="use a random subset of this many downstream test images"),
    seed: int = typer.Option(0, help="seed of the subsets and of the probes"),
    data_root: Optional[str] = typer.Option(None, envvar="STEALKIT_DATA", help="dataset root"),
    download: bool = typer.Option(False, help="let torchvision fetch a missing set (off: nothing reaches for the network)"),
    device: str = typer.Option("auto"),
    out: Optional[Path] = typer.Option(None, help="write the accuracies as JSON here"),
):
    """Downstream accuracy (TA) of frozen encoders: features extracted once, probes trained together."""
    import time

    from rich.table import Table

    from stealkit.data import DatasetNotFound, load_dataset
    from stealkit.data.registry import UnknownDataset
    from stealkit.models.checkpoint import load_encoder, read_sidecar
    from stealkit.probes.evaluate import PROBES, evaluate_feature_sets
    from stealkit.probes.features import extract_features
    from stealkit.runtime import environment, pick_device, precision_record

    if probe not in PROBES:
        fail(f"unknown probe {probe!r}; choose one of {', '.join(PROBES)}")
    apply_data_root(data_root)
    t_start = time.perf_counter()
    try:
        dev = pick_device(device)
        encoders = {str(p): load_encoder(p) for p in checkpoint}
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    cfg = {"epochs": epochs} if epochs and probe != "knn" else {}
    if probe != "knn":
        cfg["seed"] = seed
    table = Table(title=f"downstream accuracy ({probe} probe)")
    table.add_column("encoder")
    results, sizes, skipped = {}, {}, {}
    for ds in downstream:
        try:
            train, test = load_dataset(ds, "train", download=download), load_dataset(ds, "test", download=download)
        except (DatasetNotFound, UnknownDataset) as exc:
            console.print(f"[yellow]skipped {ds}[/]: {exc}")
            skipped[ds] = str(exc)
            continue
        if train_limit and train_limit < len(train):
            train = train.sample(train_limit, seed=seed)
        if test_limit and test_limit < len(test):
            test = test.sample(test_limit, seed=seed)
        table.add_column(f"{ds} (%)", justify="right")
        t0 = time.perf_counter()
        console.print(f"{ds}: features of {len(train)} train and {len(test)} test images for {len(encoders)} encoder(s)")
        tr = [extract_features(e, train.images, device=dev) for e in encoders.values()]
        te = [extract_features(e, test.images, device=dev) for e in encoders.values()]
        t1 = time.perf_counter()
        console.print(f"{ds}: features in {t1 - t0:.0f} s; training {len(encoders)} {probe} probe(s)")
        res = evaluate_feature_sets(tr, train.labels, te, test.labels, probe, train.num_classes, device=dev,
                                    **({**cfg, "progress": True} if probe in ("mlp", "mlp-raw") else cfg))
        sizes[ds] = {"train": len(train), "test": len(test), "classes": train.num_classes,
                     "feature_seconds": t1 - t0, "probe_seconds": time.perf_counter() - t1}
        for name, r in zip(encoders, res):
            results.setdefault(name, {})[ds] = r["accuracy"]
    if not results:
        fail(f"no downstream set could be loaded ({', '.join(skipped)}); give --data-root or set STEALKIT_DATA")
    for name, accs in results.items():
        table.add_row(name, *[f"{100 * a:.2f}" for a in accs.values()])
    console.print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        blob = {"accuracy": results, "datasets": sizes, "skipped": skipped, "probe": probe, "probe_config": cfg, "seed": seed,
                "train_limit": train_limit, "test_limit": test_limit, "wall_seconds": time.perf_counter() - t_start,
                "encoders": {n: {k: read_sidecar(n).get(k) for k in ("spec", "imported", "dataset", "dataset_size")} for n in encoders},
                "device": str(dev), "precision": precision_record(dev), "environment": environment()}
        if probe != "knn":
            from stealkit.probes.evaluate import probe_config_class

            blob["probe_resolved"] = probe_config_class(probe).make(**cfg).model_dump()
        from stealkit.experiment.runner import peak_rss_gib

        blob["peak_rss_gib"] = peak_rss_gib()
        out.write_text(json.dumps(blob, indent=2, default=str))
        console.print(f"wrote {out}")
