"""create_app(settings): the FastAPI EaaS server around one victim encoder (issue 4).

The lifespan hook loads the encoder (checkpoint, or an Encoder passed in), builds the defence,
opens the ledger and drops reservations a killed process left behind. Routes: see routes.py.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from stealkit.service.decode import BadInput
from stealkit.service.ledger import Ledger
from stealkit.service.routes import router
from stealkit.service.settings import ServiceSettings
from stealkit.service.state import ServiceState

log = logging.getLogger("stealkit.service")


def load_builtin_defences() -> None:
    """Import the defence modules so their names are in DEFENCES."""
    import stealkit.defences.noise  # noqa: F401
    import stealkit.defences.poisoning  # noqa: F401
    import stealkit.defences.rounding  # noqa: F401
    import stealkit.defences.topk  # noqa: F401


def _load_encoder(settings: ServiceSettings, encoder):
    from stealkit.runtime import pick_device

    device = pick_device(settings.device)
    if encoder is None:
        if not settings.checkpoint:
            raise ValueError("no encoder to serve: give settings.checkpoint or pass encoder=")
        from stealkit.models.checkpoint import load_encoder

        encoder = load_encoder(settings.checkpoint, device=device)
        name = Path(settings.checkpoint).with_suffix("").name
    else:
        encoder = encoder.to(device)
        name = getattr(getattr(encoder, "spec", None), "arch", "encoder")
    return encoder.eval(), name


def create_app(settings: ServiceSettings | dict | None = None, *, encoder=None, defence=None) -> FastAPI:
    """The ASGI app. `encoder` / `defence` objects override settings.checkpoint / settings.defence."""
    settings = settings if isinstance(settings, ServiceSettings) else ServiceSettings(**(settings or {}))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        enc, name = _load_encoder(settings, encoder)
        dfn = defence
        if dfn is None and settings.defence:
            from stealkit.defences.base import build_defence

            load_builtin_defences()
            dfn = build_defence(settings.defence)
        ledger = Ledger(settings.ledger, ttl=settings.idempotency_ttl_s)
        stale = ledger.drop_stale_reservations()
        if stale:
            log.warning("dropped %d reservations of requests that were never answered", stale)
        expired = ledger.forget_expired_answers()
        if expired:
            log.info("forgot the stored answers of %d keyed requests older than %.0f s", expired, ledger.ttl)
        app.state.service = ServiceState(settings=settings, encoder=enc, defence=dfn, ledger=ledger, model_name=name)
        log.info("serving %s (dim %d, defence %s) with ledger %s", name, enc.feature_dim, getattr(dfn, "name", "none"), settings.ledger)
        yield
        app.state.service = None

    app = FastAPI(
        title="stealkit EaaS",
        version="1",
        description="Encoder as a service: image embeddings, billed per image, with accounts, quotas and defences.",
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.exception_handler(BadInput)
    async def _bad_input(request: Request, exc: BadInput):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    return app


def run_server(settings: ServiceSettings, *, encoder=None, defence=None, log_level: str = "info") -> None:
    """Serve with uvicorn until interrupted (blocking)."""
    import uvicorn

    app = create_app(settings, encoder=encoder, defence=defence)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, timeout_graceful_shutdown=5)
