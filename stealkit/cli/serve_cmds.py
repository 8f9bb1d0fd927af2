"""`stealkit serve` (the EaaS server) and `stealkit keys create|list|revoke|set` (accounts in the ledger)."""

from __future__ import annotations

from pathlib import Path

import typer

from stealkit.cli.app import app

keys_app = typer.Typer(help="API keys: create, list, revoke and change limits of accounts in a ledger.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

LEDGER = typer.Option(Path("ledger.sqlite"), "--ledger", help="SQLite ledger of accounts and served requests")


def parse_rate(text: str | None) -> float | None:
    """'5', '5/s', '300/min', '1000/h' -> requests per second; None/'none' -> unlimited."""
    if text is None or text.lower() in ("", "none", "unlimited"):
        return None
    value, _, unit = text.partition("/")
    per = {"": 1, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
    if unit.strip().lower() not in per:
        raise typer.BadParameter(f"rate {text!r}: use R, R/s, R/min or R/h")
    return float(value) / per[unit.strip().lower()]


def parse_defence(name: str | None, args: list[str]) -> dict | None:
    """--defence topk --defence-arg k=10 -> {"name": "topk", "k": 10} (values parsed as YAML scalars)."""
    import yaml

    if not name or name == "none":
        if args:
            raise typer.BadParameter("--defence-arg given without --defence")
        return None
    spec = {"name": name}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--defence-arg {a!r}: use KEY=VALUE")
        spec[key.strip()] = yaml.safe_load(value)
    return spec


@app.command()
def serve(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="victim encoder checkpoint (.safetensors + .json)"),
    ledger: Path = LEDGER,
    host: str = typer.Option("127.0.0.1", help="interface to bind (loopback by default)"),
    port: int = typer.Option(8000),
    defence: str = typer.Option(None, "--defence", help="topk | rounding | noise | poisoning"),
    defence_arg: list[str] = typer.Option([], "--defence-arg", help="KEY=VALUE for the defence, repeatable (k=10, m=2, sigma=0.1, ...)"),
    normalize: bool = typer.Option(False, "--normalize/--raw", help="L2-normalise answers before the defence, as commercial embedding APIs do (default: raw features)"),
    price_per_1000: float = typer.Option(1.2, "--price-per-1000", help="USD per 1,000 queries"),
    device: str = typer.Option("auto"),
    max_batch: int = typer.Option(1024, help="images per request"),
    max_image_side: int = typer.Option(1024, help="largest image side in pixels"),
    max_request_mb: float = typer.Option(64.0, help="largest request body in MiB"),
    idempotency_hours: float = typer.Option(24.0, help="how long answers of requests with an Idempotency-Key are kept for free replays"),
    log_level: str = typer.Option("info"),
):
    """Serve a victim encoder as an EaaS API (POST /v1/embeddings, GET /v1/usage, /healthz, /docs)."""
    from stealkit.service import ServiceSettings, run_server

    settings = ServiceSettings(
        checkpoint=str(checkpoint), ledger=str(ledger), host=host, port=port, device=device,
        defence=parse_defence(defence, defence_arg), normalize=normalize, price_per_1000=price_per_1000, max_batch=max_batch,
        max_image_side=max_image_side, max_request_bytes=int(max_request_mb * 2**20),
        idempotency_ttl_s=idempotency_hours * 3600.0,
    )
    run_server(settings, log_level=log_level)


@keys_app.command("create")
def keys_create(
    name: str,
    ledger: Path = LEDGER,
    quota: int = typer.Option(None, help="queries (images) allowed in total; default unlimited"),
    rate: str = typer.Option(None, help="requests per second: R, R/s, R/min or R/h; default unlimited"),
    burst: int = typer.Option(None, help="token-bucket capacity; default max(1, ceil(rate))"),
):
    """Create an account and print its API key (shown once; only its SHA-256 is stored)."""
    from stealkit.service.ledger import Ledger

    try:
        key = Ledger(ledger).create_account(name, quota=quota, rate=parse_rate(rate), burst=burst)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(key)


@keys_app.command("list")
def keys_list(ledger: Path = LEDGER):
    """Accounts with their limits and the ledger's usage."""
    from stealkit.service.ledger import Ledger

    led = Ledger(ledger)
    typer.echo(f"{'name':20} {'status':8} {'quota':>10} {'rate/s':>8} {'queries':>10} {'requests':>9} {'cost':>10}")
    for a in led.accounts():
        u = led.usage(a.name)
        typer.echo(
            f"{a.name:20} {'active' if a.active else 'revoked':8} {a.quota if a.quota is not None else '-':>10} "
            f"{a.rate if a.rate is not None else '-':>8} {u.queries:>10} {u.requests:>9} {u.cost:>10.4f}"
        )


@keys_app.command("revoke")
def keys_revoke(name: str, ledger: Path = LEDGER):
    """Revoke an account's key; its history stays in the ledger."""
    from stealkit.service.ledger import Ledger

    try:
        Ledger(ledger).revoke(name)
    except KeyError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"revoked {name}")


@keys_app.command("set")
def keys_set(
    name: str,
    ledger: Path = LEDGER,
    quota: int = typer.Option(None, help="new quota (images); -1 = unlimited"),
    rate: str = typer.Option(None, help="new rate (R/s); 'none' = unlimited"),
):
    """Change an account's quota or rate limit."""
    from stealkit.service.ledger import Ledger

    kw = {}
    if quota is not None:
        kw["quota"] = None if quota < 0 else quota
    if rate is not None:
        kw["rate"] = parse_rate(rate)
    try:
        Ledger(ledger).set_limits(name, **kw)
    except KeyError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"updated {name}")
