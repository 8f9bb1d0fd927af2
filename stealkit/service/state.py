"""What the running service holds: the encoder, its defence, the ledger (and this process's lease),
the batcher and the metrics; and the two ways it answers a request's images.

Without cross-request batching, each request's same-size images go through `api_answers` on their own
(encoder, normalisation, defence), one request at a time. With it, the batcher runs the encoder and the
normalisation over many requests' images at once and each request then applies its account's defence to
its own rows, in the same order and grouping: the defence (and its per-account state) never sees another
account's rows.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from stealkit.service.decode import Group
from stealkit.service.ledger import Ledger
from stealkit.service.settings import ServiceSettings
from stealkit.targets.answers import api_answers


@dataclass
class ServiceState:
    settings: ServiceSettings
    encoder: torch.nn.Module
    defence: object | None
    ledger: Ledger
    model_name: str
    lease: object | None = None  # leases.Lease of this process
    batcher: object | None = None  # batcher.Batcher, or None: each request on its own
    metrics: object | None = None  # metrics.Metrics
    batching_mode: str = "off"
    ready: bool = False
    started: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)
    defence_lock: threading.Lock = field(default_factory=threading.Lock)
    identity: str = field(init=False)  # what answers (replays must match it); derived in __post_init__
    arch: str = field(init=False)
    input_size: int | None = field(init=False)
    feature_dim: int = field(init=False)

    def __post_init__(self) -> None:
        """identity: a fingerprint of what answers requests, stable across restarts: the encoder's weights
        and the defence's configuration (`defence_config`), however the defence was given. The encoder's
        description comes from its spec, or is measured (any module mapping images to N×D features serves)."""
        import hashlib
        import json

        from stealkit.probes.features import encoder_fingerprint

        what = json.dumps(defence_config(self.defence), sort_keys=True)
        if self.settings.normalize:  # normalised answers are other answers (unchanged identity without it)
            what += "\0normalize"
        self.identity = hashlib.sha256(f"{encoder_fingerprint(self.encoder)}\0{what}".encode()).hexdigest()
        spec = getattr(self.encoder, "spec", None)
        self.arch = str(getattr(spec, "arch", None) or type(self.encoder).__name__)
        self.input_size = getattr(spec, "input_size", None)
        dim = getattr(self.encoder, "feature_dim", None)
        if dim is None:
            side = self.input_size or 32
            dim = api_answers(self.encoder, torch.zeros(2, 3, side, side, dtype=torch.uint8)).shape[1]
        self.feature_dim = int(dim)

    def chunk(self, h: int, w: int) -> int:
        """Images per forward pass for this size: embed_batch_size, fewer for large images (forward_max_pixels)."""
        return max(1, min(self.settings.embed_batch_size, self.settings.forward_max_pixels // (h * w)))

    def answer(self, groups: list[Group], account: str) -> torch.Tensor:
        """Each request on its own: uint8 groups -> float32 N×D in request order, defence applied per account."""
        out = torch.empty(sum(len(g.index) for g in groups), self.feature_dim, dtype=torch.float32)
        with self.lock:  # one model, one batch at a time: no thread oversubscription on CPU
            for g in groups:
                out[g.index] = api_answers(self.encoder, g.images, normalize=self.settings.normalize, defence=self.defence,
                                           account=account, batch_size=self.chunk(*g.images.shape[-2:]))
        return out

    def defend(self, groups: list[Group], feats: list[torch.Tensor], account: str) -> torch.Tensor:
        """After a batched forward pass: this request's rows, its account's defence applied group by group."""
        out = torch.empty(sum(len(g.index) for g in groups), self.feature_dim, dtype=torch.float32)
        for g, f in zip(groups, feats):
            if self.defence is not None:
                with self.defence_lock:
                    f = self.defence(f, images=g.images, account=account).float()
            out[g.index] = f
        return out

    async def embed(self, groups: list[Group], account: str) -> torch.Tensor:
        from fastapi.concurrency import run_in_threadpool

        if self.batcher is None:
            return await run_in_threadpool(self.answer, groups, account)
        feats = await self.batcher.embed(groups)
        if self.defence is None:
            return self.defend(groups, feats, account)
        return await run_in_threadpool(self.defend, groups, feats, account)


def defence_config(defence) -> dict | None:
    """The configuration of a defence object, however it was built (from settings or directly): its class
    and its `identity()` (a stealkit Defence: its config as JSON, without where state is stored); for any
    other callable, the values of its constructor's parameters as it stores them (`name` or `name_kind`),
    a model among them by its weights' fingerprint. State that grows while serving (per-account tables, a
    learned centre), where it is stored (`db_path`) and random-number streams are left out."""
    if defence is None:
        return None
    import inspect

    from stealkit.probes.features import encoder_fingerprint

    cls = type(defence)
    out: dict = {"class": cls.__module__ + "." + cls.__qualname__}
    if callable(getattr(defence, "identity", None)):
        ident = dict(defence.identity())
        ident.pop("db_path", None)
        return {**out, **ident}
    stored = vars(defence)
    for name in inspect.signature(cls.__init__).parameters:
        if name == "db_path":
            continue
        v = stored.get(name, stored.get(name + "_kind"))
        if isinstance(v, (bool, int, float, str)):
            out[name] = v
        elif isinstance(v, torch.nn.Module):
            out[name] = encoder_fingerprint(v)
    return out
