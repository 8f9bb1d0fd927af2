"""`stealkit quickstart --serve`: the quickstart, but the victim is served on localhost and stolen over HTTP.

1. load the packaged quickstart config (+ --set overrides);
2. get the victim (pre-trained once, then cached by its settings under STEALKIT_CACHE) and save it
   as run_dir/victim.safetensors — the very file the server serves and the runner measures TA on;
3. open a ledger (run_dir/ledger.sqlite) and create an "attacker" account (its key is used once here);
4. serve the victim with create_app + serve_in_thread on 127.0.0.1:<free port>;
5. run the experiment with `target: {url, api_key}`: every attack queries through RemoteTarget;
6. print the TA/SA table and the ledger's view (per account, from the ledger and from GET /v1/usage),
   and check that the ledger's total equals the queries the runner reports.
"""

from __future__ import annotations

from pathlib import Path

from stealkit.cli.common import console, echo, fail, print_results

ACCOUNT = "attacker"


def prepare_victim(cfg, run_dir: Path, echo) -> Path:
    """Pre-train (or load the cached) victim of cfg and save it as run_dir/victim; -> its .safetensors path."""
    from stealkit.experiment.victims import get_victim
    from stealkit.models.checkpoint import save_encoder
    from stealkit.runtime import pick_device

    if cfg.victims is not None:
        raise ValueError("quickstart --serve serves one victim; the config lists several")
    spec = cfg.victim.model_dump()
    encoder, info = get_victim(spec, cfg.data_root, str(pick_device(cfg.device)), cfg.progress, echo)
    return save_encoder(
        encoder, run_dir / "victim", dataset=info.get("dataset"), dataset_size=info.get("dataset_size"),
        source=info.get("checkpoint"), label=cfg.victim.display(), seed=cfg.seed,
    )


def ledger_view(ledger, usage_http: dict | None = None) -> list[dict]:
    """One dict per account: queries, requests and cost billed by the ledger (+ the API's own view)."""
    rows = []
    for acc in ledger.accounts():
        u = ledger.usage(acc.name)
        row = {"account": acc.name, "queries": u.queries, "requests": u.requests, "cost": u.cost, "quota": u.quota}
        if usage_http is not None and usage_http.get("account") == acc.name:
            row["api_queries"], row["api_cost"] = usage_http["queries"], usage_http["cost"]
        rows.append(row)
    return rows


def print_ledger(rows: list[dict], runner_queries: int, price_per_1000: float) -> bool:
    """Print the ledger table and the reconciliation line; -> True when ledger total == runner's queries."""
    from rich.table import Table

    table = Table(title="EaaS ledger (what the provider billed; API = GET /v1/usage)")
    for h in ("account", "queries", "requests", "cost ($)", "quota", "API queries", "API cost ($)"):
        table.add_column(h, justify="left" if h == "account" else "right")
    for r in rows:
        table.add_row(
            r["account"], str(r["queries"]), str(r["requests"]), f"{r['cost']:.4f}", "-" if r["quota"] is None else str(r["quota"]),
            str(r.get("api_queries", "-")), "-" if "api_cost" not in r else f"{r['api_cost']:.4f}",
        )
    console.print(table)
    total = sum(r["queries"] for r in rows)
    if total == runner_queries:
        console.print(
            f"[green]ledger check OK[/]: ledger total {total} queries (${total * price_per_1000 / 1000:.2f}) "
            f"== {runner_queries} queries reported by the runner"
        )
        return True
    console.print(
        f"[bold red]LEDGER MISMATCH[/]: the ledger billed {total} queries but the runner reports {runner_queries} "
        f"(difference {total - runner_queries:+d}); answers served without being counted, or counted without being served"
    )
    return False


def quickstart_over_http(config_path: str | Path, overrides: list[str] | None, run_dir: str | Path) -> dict:
    """The whole --serve quickstart; returns the runner's results with a "ledger" entry added."""
    import json

    from pydantic import ValidationError

    from stealkit.experiment.config import TargetSpec, VictimSpec, load_config
    from stealkit.experiment.runner import file_digest, run_experiment
    from stealkit.service import Ledger, ServiceSettings, create_app
    from stealkit.service.background import serve_in_thread
    from stealkit.targets.remote import RemoteTarget

    run_dir = Path(run_dir)
    try:
        cfg = load_config(config_path, overrides)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        fail(f"bad config {config_path}: {exc}")
    if cfg.target is not None:
        fail("quickstart --serve sets the target itself; remove the 'target' block from the config")
    if cfg.defences is not None and any(d and d.get("name", "none") != "none" for d in cfg.defences):
        fail("quickstart --serve serves one defence: use 'defence:', not 'defences:'")
    run_dir.mkdir(parents=True, exist_ok=True)

    victim_path = prepare_victim(cfg, run_dir, echo)
    ledger_path = run_dir / "ledger.sqlite"
    ledger = Ledger(ledger_path)
    account, n = ACCOUNT, 1
    while ledger.account(account) is not None:  # a rerun: keep the history, retire the old key, issue a fresh one
        ledger.revoke(account)
        n += 1
        account = f"{ACCOUNT}-{n}"
    key = ledger.create_account(account)
    settings = ServiceSettings(
        checkpoint=str(victim_path), ledger=str(ledger_path), device=cfg.device, defence=cfg.defence,
        price_per_1000=cfg.price_per_1000,
    )
    # The server applies cfg.defence to the attacker's answers; the runner applies the same defence
    # locally only to measure what honest users keep (TA_defended).
    served_cfg = cfg.model_copy(update={"victim": VictimSpec(label=cfg.victim.display(), checkpoint=str(victim_path))})
    with serve_in_thread(create_app(settings)) as url:
        console.print(f"serving {victim_path.name} at {url} (ledger {ledger_path}, account {account!r})")
        # The port is new on every run; the cache keys follow what answers there: the victim file and the defence.
        identity = f"quickstart-serve:{file_digest(victim_path)}:{json.dumps(cfg.defence, sort_keys=True)}"
        served_cfg = served_cfg.model_copy(update={"target": TargetSpec(url=url, api_key=key, identity=identity)})
        results = run_experiment(served_cfg, run_dir, echo=echo)
        with RemoteTarget(url, key) as client:
            api_usage = client.usage()
    print_results(results)
    runner_queries = sum(r["queries"] for r in results["rows"])
    rows = ledger_view(ledger, api_usage)
    ok = print_ledger(rows, runner_queries, cfg.price_per_1000)
    results["ledger"] = {"path": str(ledger_path), "accounts": rows, "runner_queries": runner_queries, "match": ok}
    (run_dir / "ledger_view.json").write_text(json.dumps(results["ledger"], indent=2))
    for r in results["rows"]:
        for ds, m in r.get("downstream", {}).items():
            ratio = "—" if m["SA/TA"] is None else f"{100 * m['SA/TA']:.1f}%"
            console.print(f"{r['label']}: SA/TA on {ds} = {ratio} with {r['queries']} queries over HTTP (${r['cost']:.2f})", markup=False)
    console.print(f"run directory: {run_dir}  (results.json, report.md, ledger.sqlite, ledger_view.json)")
    return results
