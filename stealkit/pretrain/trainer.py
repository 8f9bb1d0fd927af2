"""Contrastive pre-training of a victim encoder: SimCLR (NT-Xent) or MoCo v2 (momentum encoder + queue).

Fast path: the uint8 image set stays on the device, both views of every image are
augmented once per epoch for the whole set with per-sample random draws (kornia), bf16 autocast and
channels_last on CUDA, fused Adam, optional torch.compile. Resumable: state every
`checkpoint_every` epochs; a restart continues from the last saved epoch with identical results.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from stealkit.augment import Augmenter
from stealkit.graph_step import TrainStep
from stealkit.losses import moco_infonce, nt_xent
from stealkit.models.encoder import Encoder, build_encoder, embed
from stealkit.pretrain.config import PretrainConfig
from stealkit.pretrain.heads import projection_head
from stealkit.pretrain.split_bn import split_batchnorm, unsplit_batchnorm
from stealkit.runtime import autocast, derived_seed, pick_device, seed_everything
from stealkit.training import TrainState, epoch_generator, make_optimizer, prepare_model, seed_epoch


class SimCLRModel(nn.Module):
    def __init__(self, encoder: Encoder, cfg: PretrainConfig):
        super().__init__()
        self.encoder = encoder
        self.head = projection_head(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        self.temperature = cfg.temperature

    def loss(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        z = self.head(self.encoder(torch.cat([v1, v2])))
        z1, z2 = z.float().chunk(2)
        return nt_xent(z1, z2, self.temperature)


class MoCoModel(nn.Module):
    """Query encoder+head trained by gradient; key encoder+head an EMA of them; a K×proj_dim queue.

    Shuffling BN (MoCo, Section 3.3) on one device: every BatchNorm normalises `moco_bn_splits`
    sub-batches separately, and the keys of each step are computed in a freshly shuffled order (`perm`,
    drawn per step from the seed and the epoch), so a key is normalised with other images than its
    query (split_bn.py), and with other images at every step."""

    def __init__(self, encoder: Encoder, cfg: PretrainConfig):
        super().__init__()
        self.encoder = encoder
        self.head = projection_head(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        shuffle = cfg.moco_bn_splits > 1
        if shuffle:
            for part in (self.encoder, self.head):
                split_batchnorm(part, cfg.moco_bn_splits)
        self.key_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)
        self.m, self.temperature = cfg.moco_momentum, cfg.temperature
        g = torch.Generator().manual_seed(cfg.seed)
        self.register_buffer("queue", nn.functional.normalize(torch.randn(cfg.moco_queue, cfg.proj_dim, generator=g), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.shuffle, self.batch_size = shuffle, cfg.batch_size

    def key_shuffles(self, steps: int, generator: torch.Generator) -> torch.Tensor:
        """One key order per step -> steps×B (identity orders when shuffling BN is off)."""
        if not self.shuffle:
            return torch.arange(self.batch_size).expand(steps, -1).contiguous()
        return torch.stack([torch.randperm(self.batch_size, generator=generator) for _ in range(steps)])

    def keys(self, v2: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """Key embeddings N×proj_dim of the second views, computed in the order `perm`, returned in order."""
        if len(v2) != len(perm):
            raise ValueError(f"MoCo batch of {len(v2)} images with a key order of {len(perm)}")
        return self.key_head(self.key_encoder(v2[perm]))[torch.argsort(perm)]

    @torch.no_grad()
    def _momentum_update(self) -> None:
        online = list(self.encoder.parameters()) + list(self.head.parameters())
        target = list(self.key_encoder.parameters()) + list(self.key_head.parameters())
        torch._foreach_mul_(target, self.m)
        torch._foreach_add_(target, online, alpha=1 - self.m)
        for b_k, b_q in zip(list(self.key_encoder.buffers()) + list(self.key_head.buffers()), list(self.encoder.buffers()) + list(self.head.buffers())):
            b_k.copy_(b_q)

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor) -> None:
        n, size = len(k), len(self.queue)
        idx = (self.ptr + torch.arange(n, device=k.device)) % size
        self.queue[idx] = nn.functional.normalize(k.float(), dim=1)
        self.ptr.copy_((self.ptr + n) % size)

    def loss(self, v1: torch.Tensor, v2: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        q = self.head(self.encoder(v1)).float()
        with torch.no_grad():
            self._momentum_update()
            k = self.keys(v2, perm).float()
        loss = moco_infonce(q, k, self.queue.clone(), self.temperature)
        self._enqueue(k)
        return loss


def pretrain(
    images: torch.Tensor,
    cfg: PretrainConfig,
    *,
    state_path: str | Path | None = None,
    monitor: Callable[[Encoder], float] | None = None,
    progress: bool = True,
    log_fn: Callable[[dict], None] | None = None,
) -> tuple[Encoder, list[dict]]:
    """Pre-train on uint8 images N×3×H×W -> (encoder on CPU, per-epoch log).

    monitor(encoder) -> kNN accuracy, called every `knn_every` epochs and at the end.
    """
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    n = len(images)
    if n < cfg.batch_size:
        raise ValueError(f"{n} images is fewer than one batch of {cfg.batch_size}; lower batch_size")
    encoder = build_encoder(cfg.arch, input_size=images.shape[-1])
    model = (SimCLRModel if cfg.method == "simclr" else MoCoModel)(encoder, cfg)
    model = prepare_model(model, device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    use_graph = cfg.cuda_graph and device.type == "cuda" and not cfg.compile
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, device, capturable=use_graph)
    step_loss = torch.compile(model.loss) if cfg.compile else model.loss

    def body(v1, v2, *perm):  # perm: MoCo's key order of this step
        with autocast(device, cfg.amp, cache=not use_graph):
            loss = step_loss(v1, v2, *perm)
        return loss, loss.detach()

    step = TrainStep(model, opt, body, use_graph=use_graph)
    state = TrainState(state_path)
    start, log, _ = state.load({"model": model}, opt, map_location=device)
    X = images.to(device)
    aug = Augmenter(cfg.augment, images.shape[-1]).to(device)
    view_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # two views of 50k images: 600 MB in bf16
    steps = n // cfg.batch_size
    bar = tqdm(range(start, cfg.epochs), desc=f"{cfg.method} {cfg.arch}", unit="ep", disable=not progress, initial=start, total=cfg.epochs)
    t_begin = time.perf_counter()
    for epoch in bar:
        t0 = time.perf_counter()
        seed_epoch(cfg.seed, epoch)
        perm = torch.randperm(n, generator=epoch_generator(cfg.seed, epoch)).to(device)
        V1, V2 = aug.apply_all(X, dtype=view_dtype), aug.apply_all(X, dtype=view_dtype)
        shuffles = None
        if cfg.method == "moco":  # a fresh key order every step, reproducible from (seed, epoch)
            g = torch.Generator().manual_seed(derived_seed("moco-key-shuffle", cfg.seed, epoch))
            shuffles = model.key_shuffles(steps, g).to(device)
        total = torch.zeros((), device=device)
        for i in range(steps):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            total += step(V1[idx], V2[idx], *([shuffles[i]] if shuffles is not None else []))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        entry = {"epoch": epoch + 1, "loss": (total / steps).item(), "seconds": seconds, "images_per_s": 2 * steps * cfg.batch_size / seconds}
        out_of_time = cfg.time_limit_s is not None and time.perf_counter() - t_begin > cfg.time_limit_s
        last = epoch + 1 == cfg.epochs or out_of_time
        if monitor is not None and ((cfg.knn_every and (epoch + 1) % cfg.knn_every == 0) or last):
            entry["knn_acc"] = monitor(model.encoder)
            model.train()
        log.append(entry)
        if log_fn:
            log_fn(entry)
        bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items() if k in ("loss", "knn_acc")})
        if (epoch + 1) % cfg.checkpoint_every == 0 or last:
            state.save({"model": model}, opt, epoch + 1, log)
        if out_of_time:
            entry["stopped"] = f"time limit of {cfg.time_limit_s:.0f} s reached after epoch {epoch + 1} of {cfg.epochs}"
            break
    return unsplit_batchnorm(model.encoder).cpu().eval(), log  # plain BatchNorms again (MoCo split them)


def knn_monitor(train_images, train_labels, test_images, test_labels, k: int = 200, batch_size: int = 1024):
    """Weighted kNN accuracy of an encoder's features (InstDisc/SimCLR monitor) as a callable."""
    from stealkit.probes.knn import knn_accuracy

    def run(encoder: Encoder) -> float:
        tr = embed(encoder, train_images, batch_size, amp=True, fast=True)
        te = embed(encoder, test_images, batch_size, amp=True, fast=True)
        return float(knn_accuracy(tr, train_labels, te, test_labels, k=k, num_classes=int(train_labels.max()) + 1))

    return run
