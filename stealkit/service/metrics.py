"""Prometheus metrics (prometheus-client): requests, images, refusals by status, latency, batch sizes,
and per-account billed queries read from the ledger when scraped (so every worker reports the same,
authoritative numbers); when the ledger's database holds the coverage defence's state (B4B, Dubiński et al.,
NeurIPS 2023, arXiv:2310.08571), each account's coverage too. With several workers, set
PROMETHEUS_MULTIPROC_DIR (`stealkit serve --workers` does) and any worker's /metrics adds up all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from stealkit.defences.coverage import read_coverage

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
ROUTES = ("/v1/embeddings", "/v1/usage", "/v1/model", "/v1/models", "/healthz", "/livez", "/readyz", "/metrics", "/docs", "/openapi.json")


class LedgerCollector:
    """stealkit_account_billed_queries{account}: images billed per account, from the ledger at scrape time;
    with coverage state in the ledger's database, stealkit_account_coverage{account} (the fraction of LSH
    buckets hit, averaged over tables) and stealkit_account_coverage_buckets{account} (buckets hit), and with a
    coverage-rate defence stealkit_account_coverage_rate{account} (coverage / the reference sweep's)."""

    def __init__(self, ledger):
        self.ledger = ledger

    def collect(self):
        g = GaugeMetricFamily("stealkit_account_billed_queries", "images billed to each account (from the ledger)", labels=["account"])
        for account, n in sorted(self.ledger.billed().items()):
            g.add_metric([account], n)
        yield g
        coverage = read_coverage(self.ledger.db)
        if coverage is None:
            return
        cov = GaugeMetricFamily("stealkit_account_coverage", "fraction of the coverage defence's LSH buckets each account's "
                                "queries hit, averaged over tables (B4B)", labels=["account"])
        hit = GaugeMetricFamily("stealkit_account_coverage_buckets", "LSH buckets each account's queries hit (all tables)", labels=["account"])
        rate = GaugeMetricFamily("stealkit_account_coverage_rate", "each account's coverage divided by the provider's reference "
                                 "sweep's after as many queries", labels=["account"])
        for account, s in coverage.items():
            cov.add_metric([account], s["coverage"])
            hit.add_metric([account], s["buckets"])
            if "rate" in s:
                rate.add_metric([account], s["rate"])
        yield cov
        yield hit
        if any("rate" in s for s in coverage.values()):
            yield rate


class Metrics:
    """One app's metrics, in their own registry (several apps in one process do not mix)."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("stealkit_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("stealkit_request_seconds", "request latency by route", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.refusals = Counter("stealkit_refusals", "embedding requests refused (not billed), by status", ["status"], registry=r)
        self.images = Counter("stealkit_images", "images answered and billed", registry=r)
        self.replayed = Counter("stealkit_replayed_images", "images answered from a stored answer (idempotent replays, billed 0)", registry=r)
        self.batch_images = Histogram("stealkit_batch_images", "images per cross-request forward batch", buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("stealkit_batch_requests", "requests per cross-request forward batch", buckets=SIZE_BUCKETS, registry=r)
        self.batch_wait = Histogram("stealkit_batch_queue_seconds", "time a request waited for its forward batch", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_seconds = Histogram("stealkit_batch_seconds", "time of one cross-request forward batch", buckets=LATENCY_BUCKETS, registry=r)

    def request(self, path: str, method: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if route == "/v1/embeddings" and method == "POST" and status >= 400:
            self.refusals.labels(str(status)).inc()

    def batch(self, requests: int, images: int, queued: list[float], seconds: float) -> None:
        self.batch_requests.observe(requests)
        self.batch_images.observe(images)
        self.batch_seconds.observe(seconds)
        for q in queued:
            self.batch_wait.observe(q)

    def render(self, ledger) -> bytes:
        """The text exposition: this process's metrics (or every worker's, in multiprocess mode) + the ledger's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            out = generate_latest(registry)
        else:
            out = generate_latest(self.registry)
        ledger_registry = CollectorRegistry()
        ledger_registry.register(LedgerCollector(ledger))
        return out + generate_latest(ledger_registry)
