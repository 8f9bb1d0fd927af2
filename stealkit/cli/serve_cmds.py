"""`stealkit serve` (the EaaS server), `stealkit keys create|list|revoke|set` (accounts in the ledger) and
`stealkit accounts` (accounts by risk: billed queries and coverage, service/risk.py)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from stealkit.cli.app import app
from stealkit.cli.common import fail
from stealkit.defences import DEFENCES
from stealkit.service.risk import DEFAULT_THRESHOLD

keys_app = typer.Typer(help="API keys: create, list, revoke and change limits of accounts in a ledger.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

LEDGER = typer.Option("ledger.sqlite", "--ledger", help="ledger: a path or sqlite:///path (SQLite), or postgresql://user@host:port/db")


def open_ledger(url: str, must_exist: bool = False):
    """The ledger at `url`, or a 1–2 line error and exit 2. `must_exist`: a SQLite file that is not there is
    an error (else it is created)."""
    import sqlite3

    from stealkit.db import DatabaseUnavailable, parse_url, redact
    from stealkit.service.ledger import Ledger

    try:
        dialect, target = parse_url(url)
        if must_exist and dialect == "sqlite" and target not in ("", ":memory:") and not Path(target).is_file():
            fail(f"ledger {url}: no such file (give the --ledger the server uses)")
        return Ledger(url)
    except DatabaseUnavailable as exc:
        fail(str(exc))
    except (ValueError, sqlite3.DatabaseError) as exc:
        fail(f"ledger {redact(url)}: {exc}")
    except OSError as exc:
        fail(f"ledger {redact(url)}: {exc.strerror or exc}")


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
    checkpoint: Path = typer.Option(None, "--checkpoint", help="victim encoder checkpoint (.safetensors + .json)"),
    config: Path = typer.Option(None, "--config", help="YAML/JSON file of server settings; flags given here override it"),
    ledger: str = typer.Option(None, "--ledger", help="ledger: a path or sqlite:///path, or postgresql://user@host:port/db (default ledger.sqlite)"),
    host: str = typer.Option(None, help="interface to bind (default 127.0.0.1, loopback)"),
    port: int = typer.Option(None, help="(default 8000)"),
    workers: int = typer.Option(1, "--workers", min=1, help="worker processes on this host, all on one ledger"),
    threads: int = typer.Option(None, "--threads", min=1, help="torch threads per worker (default cores / workers)"),
    defence: str = typer.Option(None, "--defence", help=" | ".join(sorted(DEFENCES)) + " (stealkit list defences: their settings)"),
    defence_arg: list[str] = typer.Option([], "--defence-arg", help="KEY=VALUE for the defence, repeatable (k=10, m=2, sigma=0.1, ...)"),
    reveal_defence: bool = typer.Option(None, "--reveal-defence/--hide-defence", help="name the defence in GET /v1/model (default hidden)"),
    normalize: bool = typer.Option(None, "--normalize/--raw", help="L2-normalise answers before the defence, as commercial embedding APIs do (default raw)"),
    price_per_1000: float = typer.Option(None, "--price-per-1000", help="USD per 1,000 queries (default 1.2)"),
    device: str = typer.Option(None, help="(default auto)"),
    max_batch: int = typer.Option(None, help="images per request (default 1024)"),
    max_image_side: int = typer.Option(None, help="largest image side in pixels (default 1024)"),
    max_request_mb: float = typer.Option(None, help="largest request body in MiB (default 64)"),
    max_request_pixels: int = typer.Option(None, help="decoded pixels (H×W summed over the images) per request (default 4194304)"),
    body_timeout: float = typer.Option(None, help="seconds a client has to send its request body, else 408 (default 60)"),
    header_timeout: float = typer.Option(None, help="seconds a client has to send its request headers (default 10)"),
    limit_concurrency: int = typer.Option(None, help="connections and requests per worker before 503 (default 128)"),
    batching: bool = typer.Option(None, "--batching/--no-batching", help="run concurrent requests as one forward pass (default on)"),
    batch_wait_ms: float = typer.Option(None, help="how long a forward pass waits for more requests (default 2)"),
    batch_max_images: int = typer.Option(None, help="images per cross-request forward pass (default 32 on CPU, 256 on a GPU)"),
    idempotency_hours: float = typer.Option(None, help="how long answers of requests with an Idempotency-Key are kept for free replays (default 24)"),
    lease_seconds: float = typer.Option(None, help="a dead worker's reservations are cleared after this long (default 30)"),
    metrics_token_file: Path = typer.Option(None, help="file holding the bearer token for GET /metrics (default /metrics off)"),
    log_format: str = typer.Option(None, help="json | text (default json)"),
    log_level: str = typer.Option("info"),
):
    """Serve a victim encoder as an EaaS API (POST /v1/embeddings, GET /v1/usage, /v1/model(s), /readyz, /metrics, /docs)."""
    import yaml
    from pydantic import ValidationError

    from stealkit.service import ServiceSettings, run_server

    values: dict = {}
    if config is not None:
        try:
            values = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            fail(f"--config {config}: {exc}")
        if not isinstance(values, dict):
            fail(f"--config {config} must hold a mapping of settings")
    token = None
    if metrics_token_file is not None:
        try:
            token = metrics_token_file.read_text().strip()
        except OSError as exc:
            fail(f"--metrics-token-file {metrics_token_file}: {exc.strerror}")
        if not token:
            fail(f"--metrics-token-file {metrics_token_file} is empty")
    given = {
        "checkpoint": str(checkpoint) if checkpoint else None, "ledger": ledger, "host": host, "port": port, "device": device,
        "defence": parse_defence(defence, defence_arg) if defence or defence_arg else None, "normalize": normalize, "price_per_1000": price_per_1000,
        "max_batch": max_batch, "max_image_side": max_image_side,
        "max_request_bytes": int(max_request_mb * 2**20) if max_request_mb is not None else None,
        "max_request_pixels": max_request_pixels, "body_timeout_s": body_timeout, "header_timeout_s": header_timeout,
        "limit_concurrency": limit_concurrency, "batching": batching, "batch_wait_ms": batch_wait_ms, "batch_max_images": batch_max_images,
        "idempotency_ttl_s": idempotency_hours * 3600.0 if idempotency_hours is not None else None, "lease_s": lease_seconds,
        "reveal_defence": reveal_defence, "metrics_token": token, "log_format": log_format, "threads": threads,
    }
    values.update({k: v for k, v in given.items() if v is not None})
    if workers > 1 and "threads" not in values:
        values["threads"] = max(1, (os.cpu_count() or 1) // workers)
    try:
        settings = ServiceSettings(**values)
    except ValidationError as exc:
        fail("bad server settings: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    if not settings.checkpoint:
        fail("nothing to serve: give --checkpoint (or 'checkpoint' in --config)")
    if settings.defence:
        from stealkit.defences.base import validate_defence
        from stealkit.service.app import load_builtin_defences

        load_builtin_defences()
        try:
            validate_defence(settings.defence)
        except ValueError as exc:
            fail(str(exc))
    if not Path(settings.checkpoint).with_suffix(".json").exists() and not Path(settings.checkpoint).exists():
        fail(f"checkpoint {settings.checkpoint} not found")
    open_ledger(settings.ledger)  # a bad URL or an unreachable database fails here, in one line
    run_server(settings, log_level=log_level, workers=workers)


@keys_app.command("create")
def keys_create(
    name: str,
    ledger: str = LEDGER,
    quota: int = typer.Option(None, help="queries (images) allowed in total; default unlimited"),
    rate: str = typer.Option(None, help="requests per second: R, R/s, R/min or R/h; default unlimited"),
    burst: int = typer.Option(None, help="token-bucket capacity; default max(1, ceil(rate))"),
):
    """Create an account and print its API key (shown once; only its SHA-256 is stored)."""
    led = open_ledger(ledger)
    try:
        key = led.create_account(name, quota=quota, rate=parse_rate(rate), burst=burst)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(key)


@keys_app.command("list")
def keys_list(ledger: str = LEDGER):
    """Accounts with their limits and the ledger's usage."""
    led = open_ledger(ledger)
    typer.echo(f"{'name':20} {'status':8} {'quota':>10} {'rate/s':>8} {'queries':>10} {'requests':>9} {'cost':>10}")
    for a in led.accounts():
        u = led.usage(a.name)
        typer.echo(
            f"{a.name:20} {'active' if a.active else 'revoked':8} {a.quota if a.quota is not None else '-':>10} "
            f"{a.rate if a.rate is not None else '-':>8} {u.queries:>10} {u.requests:>9} {u.cost:>10.4f}"
        )


@keys_app.command("revoke")
def keys_revoke(name: str, ledger: str = LEDGER):
    """Revoke an account's key; its history stays in the ledger."""
    try:
        open_ledger(ledger).revoke(name)
    except KeyError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"revoked {name}")


@keys_app.command("set")
def keys_set(
    name: str,
    ledger: str = LEDGER,
    quota: int = typer.Option(None, help="new quota (images); -1 = unlimited"),
    rate: str = typer.Option(None, help="new rate (R/s); 'none' = unlimited"),
):
    """Change an account's quota or rate limit."""
    kw = {}
    if quota is not None:
        kw["quota"] = None if quota < 0 else quota
    if rate is not None:
        kw["rate"] = parse_rate(rate)
    try:
        open_ledger(ledger).set_limits(name, **kw)
    except KeyError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"updated {name}")


@app.command()
def accounts(
    ledger: str = LEDGER,
    threshold: float = typer.Option(
        DEFAULT_THRESHOLD, "--threshold", min=0.0, max=1.0,
        help="flag accounts whose coverage (fraction of LSH buckets hit) is above this; set it from what known-honest "
             "accounts reach on your encoder and hashing (the default, 0.05, is only a starting point)"),
    rate_threshold: float = typer.Option(
        None, "--rate-threshold", min=0.0,
        help="flag by coverage rate instead (coverage / a reference sweep's after as many queries; needs a coverage "
             "defence with rate_reference): e.g. the onset of its noise ramp"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (threshold, flagged accounts, one object per account)"),
    fail_on_flag: bool = typer.Option(False, "--fail-on-flag", help="exit 3 when any account is flagged (for cron jobs)"),
):
    """Accounts by risk: billed queries beside the coverage defence's per-account coverage (B4B), highest first,
    FLAGGED above --threshold. Without coverage state in the ledger, the billed queries and how to measure it."""
    import json

    from stealkit.service.risk import account_risks, risk_json, risk_lines

    led = open_ledger(ledger, must_exist=True)
    try:
        rows, measured = account_risks(led, threshold, rate_threshold)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(risk_json(rows, measured, threshold, rate_threshold), indent=2))
    else:
        typer.echo("\n".join(risk_lines(rows, measured, threshold, rate_threshold)))
    if fail_on_flag and any(r.flagged for r in rows):
        raise typer.Exit(code=3)
