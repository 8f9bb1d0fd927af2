"""Server settings: what to serve, where the ledger is, prices and request limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServiceSettings(BaseModel):
    """Everything `stealkit serve` needs. Unknown keys fail loudly."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = None          # victim encoder checkpoint (.safetensors + .json)
    ledger: str = "ledger.sqlite"          # SQLite ledger of accounts and served requests
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    defence: dict | None = None            # {"name": "topk", "k": 10}; None = plain answers
    normalize: bool = False                # L2-normalise answers before the defence (as commercial embedding APIs do)
    price_per_1000: float = Field(1.2, ge=0)  # USD per 1,000 queries (Clarifai's price in 004)
    max_request_bytes: int = Field(64 * 2**20, gt=0)
    max_batch: int = Field(1024, gt=0)     # images per request
    max_image_side: int = Field(1024, gt=0)  # pixels, height and width
    embed_batch_size: int = Field(256, gt=0)
    idempotency_ttl_s: float = Field(24 * 3600.0, gt=0)  # how long answers of keyed requests are kept for replays
