"""The typer application every command group registers on."""

import typer

app = typer.Typer(
    name="stealkit",
    help="Encoders as a service: pre-train, serve, steal, defend and verify image encoders.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool):
    if value:
        import stealkit

        typer.echo(f"stealkit {stealkit.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
    threads: int = typer.Option(None, "--threads", min=1, envvar="STEALKIT_THREADS", help="CPU threads for torch (default: every core)"),
):
    """Encoders as a service: pre-train, serve, steal, defend and verify image encoders."""
    from stealkit.runtime import set_threads

    set_threads(threads)
