"""Linear probe: multinomial logistic regression on frozen features.

The standard linear evaluation of self-supervised encoders (SimCLR, Chen et al. 2020), offered
beside the paper's MLP classifier (StolenEncoder, Section V-A 3). Two optimisers:

- "adam": minibatch Adam, trained by the batched engine of `mlp.py` with no hidden layer, so P
  probes (features P×N×D_p) train together exactly as they would alone;
- "lbfgs": full-batch L-BFGS (strong Wolfe line search) with an L2 penalty; probes train one by one
  (L-BFGS couples all parameters, so stacking would change each probe's path).
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field, model_validator
from typing import Sequence

import torch
import torch.nn.functional as F

from stealkit.probes.mlp import BatchedMLP, ProbeConfig, ProbeResult, _predict, _stack_feats, per_probe, train_probes


class LinearConfig(ProbeConfig):
    optimizer: Literal["adam", "lbfgs"] = "adam"
    lr: float | None = Field(None, gt=0)  # default 1e-3 (adam), 1.0 (lbfgs)
    epochs: int = Field(100, ge=0)  # adam: epochs; lbfgs: maximum iterations
    batch_size: int = Field(256, ge=1)  # adam only
    weight_decay: float | None = Field(None, ge=0)  # default 0 (adam), 1e-4 (lbfgs: 0.5·wd·||W||² added to the mean loss)
    normalize: bool = False
    seed: int = 0
    eval_every: int = Field(0, ge=0)  # adam only
    eval_batch_size: int = Field(8192, ge=1)
    progress: bool = False  # adam only
    amp: bool = True  # adam only: bf16 autocast on CPUs with bf16 units

    @model_validator(mode="after")
    def _defaults(self):
        if self.lr is None:
            self.lr = 1e-3 if self.optimizer == "adam" else 1.0
        if self.weight_decay is None:
            self.weight_decay = 0.0 if self.optimizer == "adam" else 1e-4
        return self


def train_linear_probes(train_feats, train_labels, test_feats, test_labels, num_classes: int | None = None,
                        seeds: Sequence[int] | None = None, device: torch.device | str | None = None,
                        **cfg) -> list[ProbeResult]:
    """Same inputs and outputs as `mlp.train_probes` (lists of N×D_p / M×D_p features, labels)."""
    c = LinearConfig.make(**cfg)
    if c.optimizer == "adam":
        keep = {k: v for k, v in c.model_dump().items() if k != "optimizer"}
        results = train_probes(train_feats, train_labels, test_feats, test_labels, num_classes, seeds, device,
                               hidden=(), dropout=0.0, **keep)
        for r in results:
            r.config["optimizer"] = "adam"
        return results

    from stealkit.runtime import pick_device

    device = pick_device(None if device is None else str(device))
    xs, ys, xt, yt = per_probe(train_feats, train_labels, test_feats, test_labels)
    P = len(xs)
    if num_classes is None:
        num_classes = int(max(int(y.max()) for y in [*ys, *yt] if len(y))) + 1
    seeds = [c.seed] * P if seeds is None else [int(s) for s in seeds]
    return [_lbfgs_one(xs[p], ys[p], xt[p], yt[p], num_classes, seeds[p], device, c) for p in range(P)]


def _lbfgs_one(x, y, xt, yt, num_classes: int, seed: int, device: torch.device, c: LinearConfig) -> ProbeResult:
    t0 = time.perf_counter()
    X, XT = _stack_feats([x], c.normalize, device), _stack_feats([xt], c.normalize, device)
    Y, YT = y.long().to(device)[None], yt.long().to(device)[None]
    model = BatchedMLP([x.shape[1]], (), num_classes, [seed]).to(device)
    opt = torch.optim.LBFGS(model.parameters(), lr=c.lr, max_iter=c.epochs, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X)[0], Y[0])
        if c.weight_decay:
            loss = loss + 0.5 * c.weight_decay * model.weights[0].pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)  # returns the loss before the first iteration; recompute the final one
    with torch.no_grad():
        loss = float(F.cross_entropy(model(X)[0], Y[0]))
    pred = _predict(model, XT, c.eval_batch_size)
    acc = float((pred == YT).float().mean())
    train_acc = float((_predict(model, X, c.eval_batch_size) == Y).float().mean())
    conf = {**c.model_dump(), "num_classes": num_classes, "probes_in_batch": 1, "device": str(device), "seed": seed}
    return ProbeResult(acc, pred[0].cpu(), train_acc, loss, time.perf_counter() - t0, [], conf, model.cpu().export(0).eval())
