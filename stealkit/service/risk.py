"""Which accounts look like thieves: each account's billed queries (the ledger) beside its coverage, the
coverage defence's per-account state (B4B, Dubiński et al., "Bucks for Buckets (B4B): Active Defenses Against
Stealing Encoders", NeurIPS 2023, arXiv:2310.08571), highest coverage first, flagged above a threshold.

An honest user solves a narrow task and its queries stay in a few LSH buckets; a thief sweeps the input
space and covers many. Where the line lies depends on the encoder, the hashing (2^num_planes buckets per
table) and how many queries an account made, so the threshold is the operator's: set it above the coverage
that known-honest accounts reach. DEFAULT_THRESHOLD (5% of the buckets) is a starting point, not a calibration.
Used by `stealkit accounts`; /metrics exports the same coverage numbers (metrics.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from stealkit.defences.coverage import read_coverage

DEFAULT_THRESHOLD = 0.05
MONITOR_HINT = ("coverage is not measured in this ledger: serve with --defence coverage --defence-arg curve=none "
                "--defence-arg transform=none to measure it without changing answers")


@dataclass(frozen=True)
class AccountRisk:
    account: str
    billed: int              # images billed (the ledger)
    queries: int | None      # images the coverage defence hashed (None: coverage not measured)
    buckets: int | None      # LSH buckets hit, all tables
    coverage: float | None   # fraction of a table's buckets hit, averaged over tables
    rate: float | None       # coverage / the reference sweep's after as many queries (a coverage-rate defence only)
    flagged: bool            # coverage > threshold, or rate > rate_threshold when that is given


def account_risks(ledger, threshold: float = DEFAULT_THRESHOLD, rate_threshold: float | None = None) -> tuple[list[AccountRisk], bool]:
    """-> (one row per account of the ledger or of the coverage state, by coverage (or rate, with rate_threshold)
    then billed queries, highest first; whether the ledger's database holds coverage state at all)."""
    coverage = read_coverage(ledger.db)
    if rate_threshold is not None and coverage and not any("rate" in s for s in coverage.values()):
        raise ValueError("--rate-threshold needs a coverage defence with a rate_reference: this ledger's coverage "
                         "state has no reference sweep; flag by --threshold (coverage) instead")
    billed = ledger.billed()
    names = [a.name for a in ledger.accounts()]
    names += sorted(set(coverage or {}) - set(names))  # state of accounts the ledger does not know (an in-process defence)
    rows = []
    for name in names:
        if coverage is None:
            rows.append(AccountRisk(name, billed.get(name, 0), None, None, None, None, False))
            continue
        s = coverage.get(name, {"queries": 0, "buckets": 0, "coverage": 0.0})  # an account that has not queried yet
        rate = s.get("rate")
        flagged = (rate or 0.0) > rate_threshold if rate_threshold is not None else s["coverage"] > threshold
        rows.append(AccountRisk(name, billed.get(name, 0), s["queries"], s["buckets"], s["coverage"], rate, flagged))
    by_rate = rate_threshold is not None
    rows.sort(key=lambda r: (-((r.rate if by_rate else r.coverage) or 0.0), -r.billed, r.account))
    return rows, coverage is not None


def risk_json(rows: list[AccountRisk], measured: bool, threshold: float, rate_threshold: float | None = None) -> dict:
    return {"threshold": threshold, "rate_threshold": rate_threshold, "coverage_measured": measured,
            "flagged": [r.account for r in rows if r.flagged], "accounts": [asdict(r) for r in rows]}


def risk_lines(rows: list[AccountRisk], measured: bool, threshold: float, rate_threshold: float | None = None) -> list[str]:
    """The text table (and, without coverage state, the line that says how to measure it)."""
    if not measured:
        return [f"{'account':24} {'billed':>10}", *(f"{r.account:24} {r.billed:>10}" for r in rows), MONITOR_HINT]
    rated = any(r.rate is not None for r in rows)
    out = [f"{'account':24} {'billed':>10} {'cov. queries':>12} {'buckets':>8} {'coverage':>9}" + (f" {'rate':>6}" if rated else "") + "  risk"]
    for r in rows:
        rate = (f" {r.rate:>6.2f}" if r.rate is not None else f" {'-':>6}") if rated else ""
        out.append(f"{r.account:24} {r.billed:>10} {r.queries:>12} {r.buckets:>8} {100 * r.coverage:>8.2f}%{rate}  {'FLAGGED' if r.flagged else '-'}")
    n = sum(r.flagged for r in rows)
    rule = f"coverage rate > {rate_threshold:g}" if rate_threshold is not None else f"coverage > {100 * threshold:.2f}% of the buckets"
    out.append(f"{n} of {len(rows)} accounts flagged ({rule})")
    return out
