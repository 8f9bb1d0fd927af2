"""`stealkit data list` and `stealkit data info NAME`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from stealkit.cli.app import app
from stealkit.data.registry import DATASETS, DatasetNotFound, UnknownDataset, load_dataset, resolve_data_root
from stealkit.data.torchvision_sets import TORCHVISION, TorchvisionSource

data_app = typer.Typer(help="List and inspect datasets (archives, ImageFolders, torchvision, embedded).", no_args_is_help=True)
app.add_typer(data_app, name="data")

DATA_ROOT_HELP = "Data root holding <name>/<split>.tar.gz or <name>/<split>/<class>/<file> (default: $STEALKIT_DATA or ./data)."


def _found(name: str, root: Path) -> str:
    """Which splits of `name` are present under root, and in which form (no download, no decode)."""
    info = DATASETS[name]
    if "embedded" in info.sources:
        return "embedded"
    found = []
    for split in info.splits:
        if (root / name / f"{split}.tar.gz").is_file():
            found.append(f"{split} (archive)")
        elif (root / name / split).is_dir():
            found.append(f"{split} (folder)")
        elif name in TORCHVISION and split in TORCHVISION[name].splits and TorchvisionSource(name, root, split).present():
            found.append(f"{split} (torchvision)")
    return ", ".join(found) if found else "-"


@data_app.command("list")
def list_cmd(data_root: Optional[Path] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP)) -> None:
    """Registered datasets and which splits are found under the data root."""
    root = resolve_data_root(data_root)
    table = Table(title=f"datasets (data root: {root})")
    for col in ("name", "splits", "sources", "found", "description"):
        table.add_column(col)
    for name, info in DATASETS.items():
        table.add_row(name, ", ".join(info.splits), ", ".join(info.sources), _found(name, root), info.description)
    Console().print(table)


@data_app.command("info")
def info_cmd(
    name: str = typer.Argument(..., help="A registered name (see `stealkit data list`), folder:/path or archive:/path.tar.gz."),
    split: str = typer.Option("train", "--split", "-s"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    size: int = typer.Option(32, "--size", help="Side of the square images after resizing."),
    download: Optional[bool] = typer.Option(None, "--download/--no-download", help="Let torchvision fetch a missing set (default: try)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Decoded-set cache (default: $STEALKIT_CACHE or ~/.cache/stealkit)."),
) -> None:
    """Load NAME/SPLIT and print its count, classes, image shape and per-class counts."""
    try:
        data = load_dataset(name, split, root=data_root, size=size, download=download, cache_dir=cache_dir)
    except (DatasetNotFound, UnknownDataset, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    console = Console()
    console.print(f"[bold]{data.name}[/bold]  source: {data.meta.get('source')}  {data.meta.get('path') or ''}")
    console.print(f"images: {len(data)}  shape: {tuple(data.images.shape[1:])}  dtype: {data.images.dtype}  classes: {data.num_classes}")
    counts = data.labels[data.labels >= 0].bincount(minlength=data.num_classes).tolist()
    table = Table(title="per-class counts")
    table.add_column("label", justify="right")
    table.add_column("class")
    table.add_column("count", justify="right")
    for i, cls in enumerate(data.classes):
        table.add_row(str(i), cls, str(counts[i]) if i < len(counts) else "-")
    unlabelled = int((data.labels < 0).sum())
    if unlabelled:
        table.add_row("-1", "(unlabelled)", str(unlabelled))
    console.print(table)
