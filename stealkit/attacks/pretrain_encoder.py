"""Pre-training-encoder baseline (seed 004, Section V-A 4): SimCLR on the attacker's own surrogate
set with the victim's pre-training settings; zero queries to the target."""

from __future__ import annotations

import time
from pathlib import Path

from stealkit.attacks.base import Attack, StealResult, register_attack
from stealkit.pretrain.config import PretrainConfig
from stealkit.pretrain.trainer import pretrain


@register_attack("pretrain-encoder")
class PretrainEncoder(Attack):
    """Config: any PretrainConfig field (method, arch, epochs, batch_size, lr, ...); data is the surrogate."""

    Config = PretrainConfig

    def steal(self, target, surrogate, *, device=None, workdir=None, progress=True) -> StealResult:
        cfg = self.config if device is None else self.config.model_copy(update={"device": str(device)})
        t0 = time.perf_counter()
        state = Path(workdir) / "pretrain_state.pt" if workdir else None
        encoder, log = pretrain(surrogate.images, cfg, state_path=state, progress=progress)
        return StealResult(encoder=encoder, queries=0, log=log, train_seconds=time.perf_counter() - t0,
                           info={"surrogate": surrogate.name, "surrogate_size": len(surrogate), "config": cfg.model_dump()})
