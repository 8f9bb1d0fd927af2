"""Request and response bodies of the EaaS API (JSON forms; the binary forms are in routes.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EmbeddingsRequest(BaseModel):
    """JSON form of POST /v1/embeddings: base64-encoded PNG/JPEG files (data: URLs accepted)."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(..., description="base64 PNG or JPEG images; one image = one billable query")


class OpenAIEmbeddingsRequest(BaseModel):
    """The common embedding-API JSON form: `input` holds base64 PNG/JPEG images (or one); answered in that form too."""

    model_config = ConfigDict(extra="forbid")
    input: list[str] | str = Field(..., description="base64 PNG or JPEG images (data: URLs accepted); one image = one billable query")
    model: str | None = Field(None, description="ignored: the server serves one model (its name is in the answer)")
    encoding_format: Literal["float", "base64"] = Field("float", description="'base64': each embedding as base64 of little-endian float32")
    dimensions: int | None = Field(None, description="if given, must equal the served feature dimension")
    user: str | None = None


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


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int = Field(..., description="images in the request (one image = one billable query)")
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "stealkit"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelEntry]


class ModelInfo(BaseModel):
    model: str
    arch: str
    input_size: int | None
    feature_dim: int
    defence: str = Field(..., description="the output defence, or 'undisclosed' unless the operator chose to reveal it")
    price_per_1000: float
    max_batch: int
    max_image_side: int
    max_request_bytes: int
    max_request_pixels: int


class Health(BaseModel):
    status: str
    model_loaded: bool


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    reasons: list[str] = Field(default_factory=list)
    batching: str = Field("off", description="'dynamic', 'fixed' or 'off' (see the serving docs)")


class Error(BaseModel):
    detail: str
