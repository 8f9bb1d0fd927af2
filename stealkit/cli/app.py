"""The typer application every command group registers on."""

import typer

app = typer.Typer(
    name="stealkit",
    help="Encoders as a service: pre-train, serve, steal, defend and verify image encoders.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
