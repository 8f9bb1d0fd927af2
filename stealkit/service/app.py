"""create_app(settings): the FastAPI EaaS server around one victim encoder.

The lifespan hook loads the encoder (checkpoint, or an Encoder passed in), builds the defence (a
defence with per-account state keeps it in the ledger's database, shared by all workers), opens the
ledger, takes this process's lease, clears the reservations of dead processes only, checks whether
requests can share forward passes bit-exactly (invariance.py) and starts the batcher. Routes:
routes.py (embeddings) and info_routes.py.

`create_app()` without arguments reads its settings from the environment (`ServiceSettings.from_env`),
so it is also the app factory of `uvicorn --factory stealkit.service.app:create_app --workers N`.
"""

from __future__ import annotations

import inspect
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from stealkit.service import info_routes, routes
from stealkit.db import DatabaseUnavailable
from stealkit.service.decode import BadInput
from stealkit.service.ledger import Ledger
from stealkit.service.settings import ServiceSettings
from stealkit.service.state import ServiceState

log = logging.getLogger("stealkit.service")


def load_builtin_defences() -> None:
    """Import the defence modules so their names are in DEFENCES."""
    import stealkit.defences.coverage  # noqa: F401
    import stealkit.defences.noise  # noqa: F401
    import stealkit.defences.poisoning  # noqa: F401
    import stealkit.defences.rounding  # noqa: F401
    import stealkit.defences.topk  # noqa: F401


def _load_encoder(settings: ServiceSettings, encoder):
    from stealkit.runtime import pick_device

    device = pick_device(settings.device)
    if encoder is None:
        if not settings.checkpoint:
            raise ValueError("no encoder to serve: give settings.checkpoint (STEALKIT_SERVE_CHECKPOINT for a factory) or pass encoder=")
        from stealkit.models.checkpoint import load_encoder

        encoder = load_encoder(settings.checkpoint, device=device)
        name = Path(settings.checkpoint).with_suffix("").name
    else:
        encoder = encoder.to(device)
        name = getattr(getattr(encoder, "spec", None), "arch", None) or type(encoder).__name__
    return encoder.eval(), name


def build_served_defence(settings: ServiceSettings):
    """The defence of settings.defence; one with per-account state (a `db_path`) keeps it in the ledger's database."""
    if not settings.defence:
        return None
    from stealkit.defences.base import DEFENCES, build_defence

    load_builtin_defences()
    spec = dict(settings.defence)
    cls = DEFENCES.get(spec.get("name"))
    if cls is not None and "db_path" in inspect.signature(cls.__init__).parameters and "db_path" not in spec:
        spec["db_path"] = settings.ledger
    return build_defence(spec)


def create_app(settings: ServiceSettings | dict | None = None, *, encoder=None, defence=None) -> FastAPI:
    """The ASGI app. `encoder` / `defence` objects override settings.checkpoint / settings.defence."""
    if settings is None:
        settings = ServiceSettings.from_env()
    settings = settings if isinstance(settings, ServiceSettings) else ServiceSettings(**settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        st = _start(settings, encoder, defence, app.state.metrics)
        app.state.service = st
        try:
            yield
        finally:
            st.ready = False
            if st.batcher is not None:
                st.batcher.stop()
            if st.lease is not None:
                st.lease.release()
            app.state.service = None

    from stealkit.service.logs import AccessLog
    from stealkit.service.metrics import Metrics

    app = FastAPI(
        title="stealkit EaaS",
        version="1",
        description="Encoder as a service: image embeddings, billed per image, with accounts, quotas and defences.",
        lifespan=lifespan,
    )
    app.state.metrics = Metrics()
    app.include_router(routes.router)
    app.include_router(info_routes.router)
    app.add_middleware(AccessLog, metrics=app.state.metrics)

    @app.exception_handler(BadInput)
    async def _bad_input(request: Request, exc: BadInput):
        headers = {"Connection": "close"} if exc.status == 408 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(DatabaseUnavailable)
    async def _no_database(request: Request, exc: DatabaseUnavailable):
        log.error("ledger unavailable: %s", exc)
        return JSONResponse({"detail": "the ledger is unavailable; nothing was billed, retry shortly"}, status_code=503, headers={"Retry-After": "1"})

    return app


def _start(settings: ServiceSettings, encoder, defence, metrics) -> ServiceState:
    import torch

    from stealkit.service.batcher import Batcher
    from stealkit.service.invariance import batching_mode
    from stealkit.service.leases import Lease

    if settings.threads:
        torch.set_num_threads(settings.threads)
    enc, name = _load_encoder(settings, encoder)
    dfn = defence if defence is not None else build_served_defence(settings)
    ledger = Ledger(settings.ledger, ttl=settings.idempotency_ttl_s)
    lease = Lease(ledger, settings.lease_s)
    stale = ledger.drop_stale_reservations()
    if stale:
        log.warning("cleared %d reservations of server processes that are gone (lease expired, or none)", stale)
    expired = ledger.forget_expired_answers()
    if expired:
        log.info("forgot the stored answers of %d keyed requests older than %.0f s", expired, ledger.ttl)
    lease.start()
    st = ServiceState(settings=settings, encoder=enc, defence=dfn, ledger=ledger, model_name=name, lease=lease, metrics=metrics)
    if settings.batching:
        max_images = settings.forward_images(next(enc.parameters()).device.type)
        st.batching_mode = batching_mode(enc, st.input_size or 32, max_images, normalize=settings.normalize)
        if st.batching_mode == "off":
            log.warning("cross-request batching is off: this encoder's answers depend on the batch they are computed in")
        else:
            st.batcher = Batcher(enc, st.feature_dim, mode=st.batching_mode, normalize=settings.normalize,
                                 max_images=max_images, wait_s=settings.batch_wait_ms / 1000.0,
                                 max_pixels=settings.forward_max_pixels, metrics=metrics)
    st.ready = True
    log.info(
        "serving %s (dim %d, defence %s, batching %s) with ledger %s, lease %s", name, st.feature_dim,
        getattr(dfn, "name", "none") if dfn is not None else "none", st.batching_mode, ledger.db.display, lease.owner,
    )
    return st


def run_server(settings: ServiceSettings, *, encoder=None, defence=None, log_level: str = "info", workers: int = 1) -> None:
    """Serve with uvicorn until interrupted (blocking). With workers > 1 (or no encoder object) the workers
    build the app themselves from the settings, passed in the environment."""
    import os

    import uvicorn

    from stealkit.service.logs import log_config

    common = dict(host=settings.host, port=settings.port, log_config=log_config(settings.log_format, log_level), log_level=log_level,
                  timeout_graceful_shutdown=30, limit_concurrency=settings.limit_concurrency, access_log=False,
                  http="stealkit.service.protocol:GuardedH11Protocol")
    if workers > 1:
        if encoder is not None or defence is not None:
            raise ValueError("several workers load the encoder from settings.checkpoint; do not pass encoder/defence objects")
        os.environ.update(settings.to_env())
        metrics_dir = None
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # every worker's counts, added up by any worker's /metrics
            import tempfile

            metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="stealkit-metrics-")
        # A worker importing torch and loading the model on busy cores can take a while to answer the supervisor's
        # pings (uvicorn's 5 s default kills it again and again); a worker that dies is replaced within this long.
        try:
            uvicorn.run("stealkit.service.app:create_app", factory=True, workers=workers, timeout_worker_healthcheck=30, **common)
        finally:
            if metrics_dir is not None:
                import shutil

                shutil.rmtree(metrics_dir, ignore_errors=True)
        return
    from stealkit.service.protocol import GuardedH11Protocol

    GuardedH11Protocol.header_timeout = settings.header_timeout_s
    uvicorn.run(create_app(settings, encoder=encoder, defence=defence), **common)
