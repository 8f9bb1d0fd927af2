"""Helpers shared by CLI commands: config loading with clear errors, result tables."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
if not console.is_terminal:  # logs and pipes: do not squeeze the results table into 80 columns
    console = Console(width=160)


def packaged_config(name: str) -> Path:
    return Path(str(resources.files("stealkit") / "configs" / f"{name}.yaml"))


def apply_data_root(data_root: str | None) -> None:
    if data_root:
        os.environ["STEALKIT_DATA"] = str(data_root)


def echo(message: str) -> None:
    """Progress lines from the runner, printed dim and without markup (labels contain [..])."""
    console.print(f"[dim]{escape(message)}[/]")


def fail(message: str) -> None:
    """A user's mistake: the message (one or two lines, never wrapped into more), exit code 2."""
    console.print(f"[bold red]error:[/] {escape(str(message))}", soft_wrap=True)
    raise typer.Exit(code=2)


def check_arch(name: str, where: str = "arch") -> None:
    """Raise a UserError when `name` is neither a registry architecture nor torchvision:NAME / timm:NAME."""
    from stealkit.models.architectures import arch_problem
    from stealkit.userinput import UserError

    problem = arch_problem(name)
    if problem:
        raise UserError(f"{where}: {problem}")


def print_results(results: dict) -> None:
    from stealkit.experiment.report import results_table

    header, lines = results_table(results)
    victims = {line[0] for line in lines}
    title = results["name"]
    if len(victims) == 1:  # one victim: name it in the title and keep the table narrow
        title += f" — victim {victims.pop()}"
        header, lines = header[1:], [line[1:] for line in lines]
    table = Table(title=escape(title))
    for h in header:
        table.add_column(h, justify="right" if h[0].isupper() or h.startswith(("#", "cost", "cos", "agree")) else "left")
    for line in lines:
        table.add_row(*[escape(c) for c in line])
    console.print(table)
    if len(results.get("seeds") or []) > 1:  # the figure to compare: mean ± standard deviation over the seeds
        from stealkit.experiment.report import seeds_table

        header, lines = seeds_table(results)
        if len({line[0] for line in lines}) == 1:  # one victim: named in the title above
            header, lines = header[1:], [line[1:] for line in lines]
        summary = Table(title=escape(f"{results['name']}: mean ± standard deviation over seeds {results['seeds']}"))
        for h in header:
            summary.add_column(h, justify="right" if h[0].isupper() or h.startswith(("#", "seeds")) else "left")
        for line in lines:
            summary.add_row(*[escape(c) for c in line])
        console.print(summary)
    for f in results.get("failures", []):
        console.print(f"[yellow]skipped[/] {escape(f['label'])}: {escape(f['error'])}")
    for f in results.get("missing_downstream", []):
        console.print(f"[yellow]skipped downstream[/] {escape(f['dataset'])}: {escape(f['error'])}")
