"""Server settings: what to serve, where the ledger is, prices, request limits, batching, operations.

`ServiceSettings.from_env()` reads them the way worker processes get them (uvicorn --factory, several
workers): a YAML/JSON file named by STEALKIT_SERVE_CONFIG, then the JSON object in STEALKIT_SERVE_SETTINGS,
then one variable per field, STEALKIT_SERVE_<FIELD> (e.g. STEALKIT_SERVE_CHECKPOINT), later ones winning.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "STEALKIT_SERVE_"


class ServiceSettings(BaseModel):
    """Everything `stealkit serve` needs. Unknown keys fail loudly."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = None          # victim encoder checkpoint (.safetensors + .json)
    ledger: str = "ledger.sqlite"          # a path or sqlite:///path, or postgresql://user@host:port/db
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    defence: dict | None = None            # {"name": "topk", "k": 10}; None = plain answers
    normalize: bool = False                # L2-normalise answers before the defence (as commercial embedding APIs do)
    price_per_1000: float = Field(1.2, ge=0)  # USD per 1,000 queries (Clarifai's price in StolenEncoder, Section VI)
    # ---- request limits (hostile input is refused before it costs memory or time) ----
    max_request_bytes: int = Field(64 * 2**20, gt=0)
    max_batch: int = Field(1024, gt=0)     # images per request
    max_image_side: int = Field(1024, gt=0)  # pixels, height and width
    max_request_pixels: int = Field(2**22, gt=0, description="decoded pixels (H×W summed over the images) per request")
    body_timeout_s: float = Field(60.0, gt=0, description="seconds a client has to send its whole request body (else 408)")
    header_timeout_s: float = Field(10.0, gt=0, description="seconds a client has to send a request's headers (else the connection is closed)")
    limit_concurrency: int | None = Field(128, gt=0, description="connections and requests per worker before 503")
    # ---- answering ----
    embed_batch_size: int = Field(256, gt=0)  # images per forward pass without cross-request batching
    forward_max_pixels: int = Field(2**23, gt=0, description="input pixels per forward pass (bounds the float copy of large images)")
    batching: bool = True                  # run concurrent requests' images as one forward pass
    batch_wait_ms: float = Field(2.0, ge=0, le=1000)  # how long a forward pass waits for more requests
    batch_max_images: int | None = Field(None, gt=0, description="images per cross-request forward pass (None: 32 on CPU, 256 on a GPU)")
    idempotency_ttl_s: float = Field(24 * 3600.0, gt=0)  # how long answers of keyed requests are kept for replays
    # ---- operations ----
    lease_s: float = Field(30.0, gt=0, description="a worker's reservations are cleared this long after it stops renewing")
    reveal_defence: bool = False           # name the defence in GET /v1/model (default: undisclosed)
    metrics_token: str | None = None       # bearer token for GET /metrics; None = /metrics off
    log_format: Literal["json", "text"] = "json"
    threads: int | None = Field(None, gt=0, description="torch threads per worker (default: cores / workers)")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "ServiceSettings":
        """Settings from STEALKIT_SERVE_CONFIG (file), STEALKIT_SERVE_SETTINGS (JSON) and STEALKIT_SERVE_<FIELD>."""
        import yaml

        env = os.environ if environ is None else environ
        values: dict = {}
        path = env.get(ENV_PREFIX + "CONFIG")
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    loaded = yaml.safe_load(f) or {}
            except OSError as exc:
                raise ValueError(f"{ENV_PREFIX}CONFIG={path}: {exc.strerror}") from None
            if not isinstance(loaded, dict):
                raise ValueError(f"{ENV_PREFIX}CONFIG={path} must hold a mapping of settings")
            values.update(loaded)
        if env.get(ENV_PREFIX + "SETTINGS"):
            values.update(json.loads(env[ENV_PREFIX + "SETTINGS"]))
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = raw if name in ("ledger", "checkpoint", "metrics_token", "host") else yaml.safe_load(raw)
        values.update(overrides)
        return cls(**values)

    def forward_images(self, device_type: str) -> int:
        """batch_max_images, or the default for the device: CPU forward passes are fastest per image at about
        32 images of 32×32 (larger batches leave the caches); a GPU keeps gaining up to a few hundred."""
        return self.batch_max_images or (256 if device_type == "cuda" else 32)

    def to_env(self) -> dict[str, str]:
        """What from_env reads back (for worker processes)."""
        return {ENV_PREFIX + "SETTINGS": self.model_dump_json()}
