"""`stealkit run CONFIG`, `stealkit quickstart`, `stealkit steal`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from stealkit.cli.app import app
from stealkit.cli.common import apply_data_root, console, echo, fail, packaged_config, print_results


def _run(config_path: Path, set_: list[str], run_dir: Optional[Path], data_root: Optional[str]):
    from pydantic import ValidationError

    from stealkit.experiment.config import load_config
    from stealkit.experiment.runner import run_experiment

    from stealkit.userinput import UserError

    apply_data_root(data_root)
    try:
        cfg = load_config(config_path, set_)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        fail(f"bad config {config_path}: {exc}")
    if data_root:
        cfg = cfg.model_copy(update={"data_root": data_root})
    try:
        results = run_experiment(cfg, run_dir, echo=echo)
    except UserError as exc:
        fail(str(exc))
    print_results(results)
    out = Path(run_dir) if run_dir else Path(cfg.output_dir) / cfg.name
    made = [f for f in ("results.json", "report.md", "plot.png", "tradeoff.png") if (out / f).exists()]
    console.print(f"run directory: {out}  ({', '.join(made)})")
    return results


@app.command()
def run(
    config: Path = typer.Argument(..., help="experiment YAML (see configs/)"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set attack.config.epochs=10"),
    run_dir: Optional[Path] = typer.Option(None, help="run directory (default: <output_dir>/<name>)"),
    data_root: Optional[str] = typer.Option(None, envvar="STEALKIT_DATA", help="dataset root"),
):
    """Run an experiment config: victim, attack(s), probes, report. Finished work is reused on rerun."""
    _run(config, set_, run_dir, data_root)


@app.command()
def quickstart(
    run_dir: Path = typer.Option(Path("runs/quickstart"), help="where to write the run directory"),
    set_: list[str] = typer.Option([], "--set", help="override a config key"),
    serve: bool = typer.Option(False, help="serve the victim on localhost and steal it over HTTP"),
):
    """The main job on embedded data (no download): train a small victim, steal it, compare TA and SA."""
    path = packaged_config("quickstart")
    console.print(f"quickstart config: {path}")
    if serve:
        from stealkit.cli.quickstart_http import quickstart_over_http

        quickstart_over_http(path, set_, run_dir)
        return
    results = _run(path, set_, run_dir, None)
    from stealkit.experiment.report import grouped

    for (_, label, ds), entries in grouped(results).items():
        ratios = [100 * e["ds"]["SA/TA"] for e in entries if e["ds"]["SA/TA"] is not None]
        row = entries[0]["row"]
        if not ratios:
            ratio = "—"
        elif len(ratios) == 1:
            ratio = f"{ratios[0]:.1f}%"
        else:
            import statistics

            ratio = f"{statistics.fmean(ratios):.1f}% ± {statistics.stdev(ratios):.1f} over {len(ratios)} seeds"
        console.print(f"{escape(label)}: SA/TA on {ds} = {ratio} with {row['queries']} queries (${row['cost']:.2f})", markup=False)
