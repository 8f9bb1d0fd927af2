"""The paper's downstream classifier, trained on frozen features; several probes at once.

StolenEncoder (Liu, Jia, Liu, Gong, CCS 2022, arXiv:2201.05889), Section V-A 3): a fully connected
network with two hidden layers of 512 and 256 neurons, ReLU, softmax output (cross-entropy), Adam with
learning rate 1e-4, batch size 256, 500 epochs. The paper is silent on the input and on regularisation;
the authors' released code (liu00222/StolenEncoder, `code/evaluate_surrogate_encoder.py` and
`code/nn_classifier.py`) L2-normalises every feature vector before the probe and applies Dropout(0.5)
after the first hidden layer's ReLU. That released form is the `mlp` probe's default; `mlp-raw`
(`MLPRawConfig`) is stealkit's earlier form: raw features, no dropout.

Training is launch-bound (many small steps), so P independent probes are stacked into one model:
layer weights P×in×out applied with `torch.baddbmm`. Each probe has its own features (P×N×D_p,
zero-padded to the largest D), labels, initialisation and per-epoch shuffle (CPU generators, so a
probe gets the same init and batch order on CPU and GPU, alone or in a batch). Adam is elementwise
and the loss is a sum of per-probe means, so probe p trains exactly as it would alone.
With `hidden=()` the same engine is a multinomial logistic regression (see `linear.py`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


def per_probe(train_feats, train_labels, test_feats, test_labels):
    """Spread the inputs of P probes into lists: one N×D tensor counts as P=1; labels given once
    (int64 N) are shared by every probe -> (train feats, train labels, test feats, test labels), each of length P."""
    xs = [train_feats] if isinstance(train_feats, torch.Tensor) and train_feats.ndim == 2 else list(train_feats)
    xt = [test_feats] if isinstance(test_feats, torch.Tensor) and test_feats.ndim == 2 else list(test_feats)
    P = len(xs)
    ys = [train_labels] * P if isinstance(train_labels, torch.Tensor) and train_labels.ndim == 1 else list(train_labels)
    yt = [test_labels] * P if isinstance(test_labels, torch.Tensor) and test_labels.ndim == 1 else list(test_labels)
    return xs, ys, xt, yt


class ProbeConfig(BaseModel):
    """Base of the probes' settings: strict (an unknown key is an error naming it)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def make(cls, **cfg):
        """Validated settings; a mistake is a ValueError naming the key ("unknown probe config key ...")."""
        try:
            return cls(**cfg)
        except ValidationError as exc:
            bad = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
            if bad:
                raise ValueError(f"unknown probe config keys {sorted(bad)}; known: {sorted(cls.model_fields)}") from None
            from stealkit.userinput import describe

            raise ValueError(f"bad probe config: {describe(exc)}") from None


class MLPConfig(ProbeConfig):
    """Defaults are the paper's (StolenEncoder, Section V-A 3): 512-256 ReLU MLP, Adam 1e-4, batch 256,
    500 epochs; and, where the paper is silent, the released code's: L2-normalised features, Dropout(0.5)
    after the first hidden layer (training only)."""

    hidden: tuple[int, ...] = (512, 256)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(256, ge=1)
    epochs: int = Field(500, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    normalize: bool = True  # L2-normalise features before the probe (released code)
    dropout: float = Field(0.5, ge=0, lt=1)  # after the first hidden layer's ReLU, training only (released code)
    seed: int = 0  # default seed of every probe (init and shuffle); override per probe with `seeds`
    eval_every: int = Field(0, ge=0)  # >0: record (and log) test accuracy every k epochs
    eval_batch_size: int = Field(8192, ge=1)
    progress: bool = False  # tqdm bar over epochs
    amp: bool = True  # bf16 autocast for training steps on CPUs with bf16 units (runtime.bf16_enabled); fp32 elsewhere


class MLPRawConfig(MLPConfig):
    """stealkit's earlier MLP probe (`mlp-raw`): the paper's network on raw features, without dropout."""

    normalize: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)


@dataclass
class ProbeResult:
    """accuracy: test accuracy in [0, 1]; predictions: int64 M (CPU); history: periodic evaluations;
    seconds: wall time of the whole (batched) training."""

    accuracy: float
    predictions: torch.Tensor
    train_accuracy: float
    final_loss: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    classifier: nn.Module | None = None  # the trained probe as nn.Sequential on the CPU (input D_p)


def init_layers(dims: Sequence[int], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """nn.Linear's default init (U(±1/sqrt(fan_in)) for W and b) drawn on a CPU generator.

    dims = [D, h1, ..., C] -> [(W in×out, b out)] per layer; same numbers on any device.
    """
    g = torch.Generator().manual_seed(int(seed))
    layers = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        w = torch.empty(fan_in, fan_out).uniform_(-bound, bound, generator=g)
        b = torch.empty(fan_out).uniform_(-bound, bound, generator=g)
        layers.append((w, b))
    return layers


class BatchedMLP(nn.Module):
    """P independent MLPs: x P×B×D_max -> logits P×B×C. Probe p's input dimension is dims[p]."""

    def __init__(self, in_dims: Sequence[int], hidden: Sequence[int], num_classes: int, seeds: Sequence[int]):
        super().__init__()
        self.in_dims = [int(d) for d in in_dims]
        d_max = max(self.in_dims)
        self.sizes = [d_max, *hidden, num_classes]
        per_probe = [init_layers([d, *hidden, num_classes], s) for d, s in zip(self.in_dims, seeds)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            w = torch.zeros(len(per_probe), fan_in, fan_out)  # zero rows pad the smaller inputs
            for p, layers in enumerate(per_probe):
                w[p, : layers[layer][0].shape[0]] = layers[layer][0]
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.stack([layers[layer][1] for layers in per_probe])[:, None, :]))

    def forward(self, x: torch.Tensor, dropout_scale: torch.Tensor | None = None) -> torch.Tensor:
        """x P×B×D_max -> logits P×B×C. dropout_scale P×B×h1 (0 or 1/(1-p)) multiplies the first hidden
        layer after its ReLU (inverted dropout, as nn.Dropout in training); None: evaluation."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.relu(x)
                if i == 0 and dropout_scale is not None:
                    x = x * dropout_scale.to(x.dtype)
        return x

    def export(self, p: int, normalize: bool = False, dropout: float = 0.0) -> nn.Sequential:
        """Probe p as a plain nn.Sequential (input: raw features of dimension dims[p]): L2Normalize first when
        it was trained on normalised features, Linear/ReLU, and Dropout(dropout) where it trained with one."""
        mods: list[nn.Module] = [L2Normalize()] if normalize else []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            wp = w[p, : self.in_dims[p]] if i == 0 else w[p]
            lin = nn.Linear(wp.shape[0], wp.shape[1])
            with torch.no_grad():
                lin.weight.copy_(wp.t())
                lin.bias.copy_(b[p, 0])
            mods.append(lin)
            if i < last:
                mods.append(nn.ReLU())
                if i == 0 and dropout:
                    mods.append(nn.Dropout(dropout))
        return nn.Sequential(*mods)


class L2Normalize(nn.Module):
    """N×D -> N×D rows scaled to unit ℓ2 norm (the probe's input step when it trained on normalised features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


def dropout_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per probe for its dropout masks, a stream apart from its init and shuffle."""
    from stealkit.runtime import derived_seed

    return [torch.Generator().manual_seed(derived_seed("probe-dropout", int(s))) for s in seeds]


def dropout_scales(gens: list[torch.Generator], batch: int, width: int, p: float, device) -> torch.Tensor:
    """Inverted-dropout multipliers P×batch×width: 0 with probability p, else 1/(1-p); drawn per probe on
    its CPU generator (uniforms `torch.rand(batch, width)`; kept where u >= p), so a probe's masks do not
    depend on which probes train beside it or on the device."""
    u = torch.stack([torch.rand(batch, width, generator=g) for g in gens])
    return ((u >= p).float() / (1.0 - p)).to(device, non_blocking=True)


def _stack_feats(feats: list[torch.Tensor], normalize: bool, device: torch.device) -> torch.Tensor:
    d_max = max(f.shape[1] for f in feats)
    out = torch.zeros(len(feats), len(feats[0]), d_max, device=device)
    for p, f in enumerate(feats):
        f = f.to(device, torch.float32)
        out[p, :, : f.shape[1]] = F.normalize(f, dim=1) if normalize else f
    return out


@torch.no_grad()
def _predict(model: BatchedMLP, x: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([model(x[:, s : s + chunk]).argmax(-1) for s in range(0, x.shape[1], chunk)], dim=1)


def _step_loss(model, X, Y, idx, weight=None, amp: bool = False, dropout_scale=None):
    """Per-probe mean cross-entropy of the samples idx P×B (weight B: 1 valid, 0 padding) -> P.
    amp: the layers in bf16 autocast (the loss in fp32). dropout_scale: P×B×h1 (see `dropout_scales`)."""
    rows = torch.arange(X.shape[0], device=X.device)[:, None]
    with torch.autocast(X.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(X[rows, idx], dropout_scale).float()
    ce = F.cross_entropy(logits.flatten(0, 1), Y[rows, idx].flatten(), reduction="none").view(idx.shape)
    return ce.mean(1) if weight is None else (ce * weight).sum(1) / weight.sum()


def _eager_epoch(model, opt, X, Y, batch_size, epoch_loss, amp: bool = False, dropout: float = 0.0, drop_gens=None):
    """One epoch over perm P×N, step by step (a short last batch when B does not divide N); with dropout,
    each step draws its masks after the epoch's permutation, from the probes' own generators."""
    width = model.sizes[1] if len(model.sizes) > 2 else 0

    def run(perm):
        epoch_loss.zero_()
        for s in range(0, perm.shape[1], batch_size):
            idx = perm[:, s : s + batch_size]
            scale = dropout_scales(drop_gens, idx.shape[1], width, dropout, X.device) if dropout and width else None
            loss_p = _step_loss(model, X, Y, idx, amp=amp, dropout_scale=scale)
            opt.zero_grad(set_to_none=True)
            loss_p.sum().backward()
            opt.step()
            epoch_loss.add_(loss_p.detach() * idx.shape[1])

    return run


def train_probes(train_feats, train_labels, test_feats, test_labels, num_classes: int | None = None,
                 seeds: Sequence[int] | None = None, device: torch.device | str | None = None,
                 config_class: type[MLPConfig] | None = None, **cfg) -> list[ProbeResult]:
    """Train P probes together; probe p sees (train_feats[p], train_labels[p]) and is tested on test_feats[p].

    train_feats: list of P float tensors N×D_p (or one N×D tensor for P=1); labels: int64 N, shared, or
    one per probe; test_feats: list of M×D_p. seeds: one per probe (default: cfg seed for all, so probes
    on different features see the same init and batch order). cfg: fields of `config_class` (default
    MLPConfig, the released probe; MLPRawConfig for `mlp-raw`). Returns one ProbeResult per probe.
    """
    from stealkit.runtime import pick_device

    c = (config_class or MLPConfig).make(**cfg)
    device = pick_device(None if device is None else str(device))
    xs, ys, xt, yt = per_probe(train_feats, train_labels, test_feats, test_labels)
    P = len(xs)
    if not (len(xt) == len(ys) == len(yt) == P):
        raise ValueError(f"need one train/test feature and label set per probe, got {len(xs)}, {len(xt)}, {len(ys)}, {len(yt)}")
    N, M = len(xs[0]), len(xt[0])
    for p in range(P):
        if len(xs[p]) != N or len(ys[p]) != N or len(xt[p]) != M or len(yt[p]) != M:
            raise ValueError("every probe must have the same number of train (and of test) samples")
        if xs[p].shape[1] != xt[p].shape[1]:
            raise ValueError(f"probe {p}: train features have D={xs[p].shape[1]}, test D={xt[p].shape[1]}")
    if num_classes is None:
        num_classes = int(max(int(y.max()) for y in [*ys, *yt] if len(y))) + 1
    for y in [*ys, *yt]:
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}); got {int(y.min())}..{int(y.max())}")
    seeds = [c.seed] * P if seeds is None else [int(s) for s in seeds]
    if len(seeds) != P:
        raise ValueError(f"{len(seeds)} seeds for {P} probes")

    t0 = time.perf_counter()
    X, XT = _stack_feats(xs, c.normalize, device), _stack_feats(xt, c.normalize, device)
    Y = torch.stack([y.long() for y in ys]).to(device)
    YT = torch.stack([y.long() for y in yt]).to(device)
    model = BatchedMLP([x.shape[1] for x in xs], c.hidden, num_classes, seeds).to(device)
    on_gpu = device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, **({"fused": True} if on_gpu else {}))
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    history: list[list[dict]] = [[] for _ in range(P)]
    epoch_loss = torch.zeros(P, device=device)
    from stealkit.runtime import bf16_enabled

    amp = c.amp and device.type == "cpu" and bf16_enabled(device)  # CPUs with bf16 units; fp32 on GPUs (fast anyway)
    run_epoch = _eager_epoch(model, opt, X, Y, c.batch_size, epoch_loss, amp=amp, dropout=c.dropout,
                             drop_gens=dropout_generators(seeds) if c.dropout else None)

    epochs = range(c.epochs)
    bar = None
    if c.progress:
        from tqdm.auto import tqdm

        epochs = bar = tqdm(epochs, desc=f"probes×{P}", leave=False)
    for epoch in epochs:
        perm = torch.stack([torch.randperm(N, generator=g) for g in gens]).to(device, non_blocking=True)
        run_epoch(perm)
        if c.eval_every and ((epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs):
            acc = (_predict(model, XT, c.eval_batch_size) == YT).float().mean(1).tolist()
            losses = (epoch_loss / N).tolist()
            for p in range(P):
                history[p].append({"epoch": epoch + 1, "loss": losses[p], "test_accuracy": acc[p]})
            msg = " ".join(f"{a:.4f}" for a in acc)
            if bar is not None:
                bar.set_postfix_str(f"test acc {msg}")
            log.info("probes epoch %d/%d: loss %s test accuracy %s", epoch + 1, c.epochs,
                     " ".join(f"{x:.4f}" for x in losses), msg)

    pred = _predict(model, XT, c.eval_batch_size)
    acc = (pred == YT).float().mean(1).tolist()
    train_acc = (_predict(model, X, c.eval_batch_size) == Y).float().mean(1).tolist()
    final = (epoch_loss / max(N, 1)).tolist()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    pred = pred.cpu()
    model = model.cpu()
    conf = {**c.model_dump(), "num_classes": num_classes, "probes_in_batch": P, "device": str(device), "bf16": amp}
    return [ProbeResult(acc[p], pred[p].clone(), train_acc[p], final[p], seconds, history[p],
                        {**conf, "seed": seeds[p]}, model.export(p, c.normalize, c.dropout if c.hidden else 0.0).eval())
            for p in range(P)]


def train_mlp_probe(train_feats, train_labels, test_feats, test_labels, num_classes: int | None = None,
                    device: torch.device | str | None = None, **cfg) -> ProbeResult:
    """One probe: features N×D / M×D, labels N / M -> ProbeResult (see `train_probes`)."""
    return train_probes(train_feats, train_labels, test_feats, test_labels, num_classes, device=device, **cfg)[0]
