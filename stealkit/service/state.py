"""What the running service holds: the encoder, its defence, the ledger and the rate limiter."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from stealkit.targets.answers import api_answers
from stealkit.service.ledger import Ledger
from stealkit.service.ratelimit import TokenBuckets
from stealkit.service.settings import ServiceSettings


@dataclass
class ServiceState:
    settings: ServiceSettings
    encoder: torch.nn.Module
    defence: object | None
    ledger: Ledger
    model_name: str
    buckets: TokenBuckets = field(default_factory=TokenBuckets)
    lock: threading.Lock = field(default_factory=threading.Lock)
    identity: str = field(init=False)  # what answers (replays must match it); derived in __post_init__

    def __post_init__(self) -> None:
        """identity: a fingerprint of what answers requests, stable across restarts: the encoder's weights
        and the defence's configuration (`defence_config`), however the defence was given."""
        import hashlib
        import json

        from stealkit.probes.features import encoder_fingerprint

        what = json.dumps(defence_config(self.defence), sort_keys=True)
        if self.settings.normalize:  # normalised answers are other answers (unchanged identity without it)
            what += "\0normalize"
        self.identity = hashlib.sha256(f"{encoder_fingerprint(self.encoder)}\0{what}".encode()).hexdigest()

    def answer(self, images: list[torch.Tensor], account: str) -> torch.Tensor:
        """uint8 3×H×W images (sizes may differ) -> float32 N×D, defence applied per account.

        Images of the same size are embedded together; the encoder resizes to its input size.
        """
        out = torch.empty(len(images), self.encoder.feature_dim, dtype=torch.float32)
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(im.shape), []).append(i)
        with self.lock:  # one model, one batch at a time: no thread oversubscription on CPU
            for idx in groups.values():
                batch = torch.stack([images[i] for i in idx])
                out[idx] = api_answers(self.encoder, batch, normalize=self.settings.normalize, defence=self.defence,
                                       account=account, batch_size=self.settings.embed_batch_size)
        return out


def defence_config(defence) -> dict | None:
    """The configuration of a defence object, however it was built (from settings or directly): its
    class and the values of its constructor's parameters as it stores them (`name` or `name_kind`), a
    model among them (the poisoning defence's shadow encoder) by its weights' fingerprint. State that
    grows while serving (per-account tables, a learned centre) and random-number streams are left out."""
    if defence is None:
        return None
    import inspect

    from stealkit.probes.features import encoder_fingerprint

    cls = type(defence)
    out: dict = {"class": cls.__module__ + "." + cls.__qualname__}
    stored = vars(defence)
    for name in inspect.signature(cls.__init__).parameters:
        v = stored.get(name, stored.get(name + "_kind"))
        if isinstance(v, (bool, int, float, str)):
            out[name] = v
        elif isinstance(v, torch.nn.Module):
            out[name] = encoder_fingerprint(v)
    return out
