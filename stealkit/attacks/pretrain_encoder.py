"""Pre-training-encoder baseline (Liu et al., "StolenEncoder", CCS 2022, arXiv:2201.05889, Section V-A 4
and Table X): SimCLR on the attacker's own surrogate set with the victim's pre-training settings; zero
queries to the target."""

from __future__ import annotations

import time
from pathlib import Path

from stealkit.attacks.base import Attack, StealResult, register_attack
from stealkit.pretrain.config import PretrainConfig
from stealkit.pretrain.trainer import pretrain
from stealkit.runtime import derived_seed


@register_attack("pretrain-encoder")
class PretrainEncoder(Attack):
    """Pre-training-encoder baseline (Table X): SimCLR on the surrogate set with the victim's settings; zero queries.

    Config: any PretrainConfig field (method, arch, epochs, batch_size, lr, ...); data is the surrogate."""

    Config = PretrainConfig

    @classmethod
    def with_victim(cls, config: dict, victim: dict, seed: int) -> dict:
        """"The parameter settings of SimCLR are the same as those used to pre-train the target encoders":
        the victim's pre-training settings (when the victim was pre-trained here), not its data, seed, device
        or run limits, under the row's own settings. Its own seed, never the victim's: with the same seed and
        architecture it would start from the victim's initial weights (both default to seed 0)."""
        base = dict(victim.get("pretrain") or {})
        for k in ("data", "knn_data", "knn_every", "seed", "device", "time_limit_s"):
            base.pop(k, None)
        conf = {**base, **config}
        conf.setdefault("seed", derived_seed("pretrain-encoder", seed))
        return conf

    def steal(self, target, surrogate, *, device=None, workdir=None, progress=True) -> StealResult:
        cfg = self.config if device is None else self.config.model_copy(update={"device": str(device)})
        t0 = time.perf_counter()
        state = Path(workdir) / "pretrain_state.pt" if workdir else None
        encoder, log = pretrain(surrogate.images, cfg, state_path=state, progress=progress)
        return StealResult(encoder=encoder, queries=0, log=log, train_seconds=time.perf_counter() - t0,
                           info={"surrogate": surrogate.name, "surrogate_size": len(surrogate), "config": cfg.model_dump()})
