"""GET /v1/usage, /v1/model, /v1/models, /healthz, /livez, /readyz and /metrics.

/livez answers while the process serves; /readyz only when the model is loaded, the ledger answers,
this process's lease is fresh and the batcher runs (a load balancer sends traffic only then).
/metrics needs `Authorization: Bearer <metrics_token>` (it shows every account's billed queries) and
is off without a token. /v1/model names the defence only if the operator chose `reveal_defence`.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from stealkit.service.auth import require_account
from stealkit.service.ledger import Account
from stealkit.service.schemas import Error, Health, ModelEntry, ModelInfo, ModelList, Readiness, UsageResponse

router = APIRouter()
AUTH_ERRORS = {401: {"model": Error}}


@router.get("/v1/usage", response_model=UsageResponse, responses=AUTH_ERRORS)
def usage(request: Request, account: Account = Depends(require_account)):
    """The caller's queries, requests, quota, remaining queries and cost so far."""
    st = request.app.state.service
    u = st.ledger.usage(account.name)
    return UsageResponse(
        account=account.name, queries=u.queries, requests=u.requests, quota=u.quota, remaining=u.remaining,
        cost=round(u.cost, 6), price_per_1000=st.settings.price_per_1000,
    )


@router.get("/v1/model", response_model=ModelInfo, responses=AUTH_ERRORS)
def model_info(request: Request, account: Account = Depends(require_account)):
    """What is served (architecture, input size, feature dimension, price, limits); not billed. The defence
    is 'undisclosed' unless the operator reveals it."""
    st = request.app.state.service
    s = st.settings
    defence = (getattr(st.defence, "name", None) or type(st.defence).__name__) if st.defence is not None else "none"
    return ModelInfo(
        model=st.model_name, arch=st.arch, input_size=st.input_size, feature_dim=st.feature_dim,
        defence=defence if s.reveal_defence else "undisclosed", price_per_1000=s.price_per_1000,
        max_batch=s.max_batch, max_image_side=s.max_image_side, max_request_bytes=s.max_request_bytes,
        max_request_pixels=s.max_request_pixels,
    )


@router.get("/v1/models", response_model=ModelList, responses=AUTH_ERRORS)
def models(request: Request, account: Account = Depends(require_account)):
    """The served model, in the common embedding-API list form."""
    st = request.app.state.service
    return ModelList(data=[ModelEntry(id=st.model_name, created=int(st.started))])


@router.get("/healthz", response_model=Health)
def healthz(request: Request):
    return Health(status="ok", model_loaded=getattr(request.app.state, "service", None) is not None)


@router.get("/livez")
def livez():
    """The process is up and its event loop answers."""
    return {"status": "alive"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(request: Request):
    """Ready for traffic: model loaded, ledger reachable, lease fresh, batcher running; else 503 with the reasons."""
    st = getattr(request.app.state, "service", None)
    if st is None or not st.ready:
        return JSONResponse(Readiness(status="not ready", reasons=["starting or stopping"]).model_dump(), status_code=503)
    reasons = []
    try:
        st.ledger.db.clock()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        reasons.append(f"ledger unreachable: {str(exc)[:200]}")
    if st.lease is not None and not st.lease.fresh():
        reasons.append("this process's lease on the ledger is not fresh")
    if st.batcher is not None and not st.batcher.alive:
        reasons.append("the batching thread has stopped")
    body = Readiness(status="not ready" if reasons else "ready", reasons=reasons, batching=st.batching_mode)
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request):
    st = request.app.state.service
    token = st.settings.metrics_token
    if not token:
        raise HTTPException(404, "metrics are off: start the server with a metrics token (--metrics-token-file, or STEALKIT_SERVE_METRICS_TOKEN)")
    auth = request.headers.get("authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "send 'Authorization: Bearer <metrics token>'", headers={"WWW-Authenticate": "Bearer"})
    return Response(st.metrics.render(st.ledger), media_type="text/plain; version=0.0.4; charset=utf-8")
