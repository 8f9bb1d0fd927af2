"""Request and response bodies of the EaaS API (JSON forms; the binary forms are in routes.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EmbeddingsRequest(BaseModel):
    """JSON form of POST /v1/embeddings: base64-encoded PNG/JPEG files (data: URLs accepted)."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(..., description="base64 PNG or JPEG images; one image = one billable query")


class EmbeddingsResponse(BaseModel):
    model: str
    dim: int
    count: int
    embeddings: list[list[float]] = Field(..., description="float32 feature vectors, count × dim")
    billed: int
    remaining: int | None


class UsageResponse(BaseModel):
    account: str
    queries: int = Field(..., description="images answered and billed")
    requests: int
    quota: int | None
    remaining: int | None
    cost: float
    price_per_1000: float
    currency: str = "USD"


class ModelInfo(BaseModel):
    model: str
    arch: str
    input_size: int
    feature_dim: int
    defence: str
    price_per_1000: float
    max_batch: int
    max_image_side: int
    max_request_bytes: int


class Health(BaseModel):
    status: str
    model_loaded: bool


class Error(BaseModel):
    detail: str
