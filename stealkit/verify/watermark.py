"""Rotation watermark for encoders (Dziedzic, Dhawan, Kaleem, Guan, Papernot, "On the Difficulty of
Defending Self-Supervised Learning against Model Extraction", ICML 2022, arXiv:2205.07890; released code
cleverhans-lab/ssl-attacks-defenses: `simclr.py` trains it, `watermark.py` checks it).

Embedding: the victim is trained (from scratch or fine-tuned) jointly on its contrastive objective
(SimCLR NT-Xent, to keep its representations useful) and a rotation task read by a head g kept beside
the encoder, with gradients into the whole encoder:
    L = L_NT-Xent(A(x), A'(x)) + weight · CE(g(f(rot(x))), class of the rotation).
task="binary" (default; the authors' blog and `WatermarkDataset` of the released code): every image is
rotated by a random angle in (0°, 180°) (class 0) and by another in (180°, 360°) (class 1), both views
in the batch, nearest-neighbour rotation with zero fill as torchvision's RandomRotation. g is the
released `WatermarkMLP`: Linear(D, 256)-ReLU-Linear(256, 128)-ReLU-Linear(128, 2). task="quarter":
stealkit's earlier variant, one of `rotations` = 4 ({0°, 90°, 180°, 270°}) or 2 ({0°, 180°}) exact turns.

Fine-tuning an existing encoder (a provider's deployed victim, `embed_watermark(..., encoder=victim)`): a fresh
SimCLR projection head would pull the representation away from what honest users' probes rely on, so
`contrastive=False, preserve=w` replaces the contrastive term by a feature-preservation term against a
frozen copy f_0 of the encoder before fine-tuning, on augmented views A(x) (stealkit's choice, not in the
released code, which trains the victim from scratch):
    L = weight · CE(g(f(rot(x))), class) + preserve · mean(1 − cos(f(A(x)), f_0(A(x)))).
`head_lr` lets the (new) head learn faster than the (already trained) encoder moves.

Check (the released `watermark.py`): the victim's *fixed* head g is applied to the suspect's
representations of rotated images; the watermark accuracy is the fraction of correct predictions. A
stolen copy imitates the victim's representation space, so g still reads the rotation off it; an
independent encoder's space is unrelated to g, so accuracy is near chance (the blog: "near-random
accuracy of 50%"). Training a *new* rotation probe on the suspect would not work: any decent encoder
supports rotation prediction. Verdict: the unit of the test is the image (images are independent; the
predictions for one image are not): a one-sided Wilcoxon signed-rank test of the per-image accuracies
against chance. The binomial test over all predictions, which treats them as independent and so
overstates the evidence, is kept beside it as `p_binomial` for comparison with reports that use it.
Shapes: images uint8 N×3×S×S (square); encoder N×3×H×W -> N×D; head N×D -> N×classes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from typing import Literal

from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file

HEAD_FORMAT = "stealkit-watermark-head/2"  # 2: task and hidden widths stored; /1 heads (quarter task) still load
RELEASED_HIDDEN = (256, 128)


class WatermarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: str = "resnet18"  # used when no encoder is given (joint pre-training from scratch)
    task: Literal["binary", "quarter"] = "binary"
    rotations: int = 4  # task "quarter" only: 4 (0/90/180/270°) or 2 (0/180°)
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    head_lr: float | None = None  # the rotation head's learning rate (None: lr)
    weight: float = 1.0  # weight of the rotation loss
    contrastive: bool = True  # keep the SimCLR loss in the joint objective
    preserve: float = 0.0  # weight of 1 − cos(f(A(x)), f_0(A(x))) against the encoder as it was given (fine-tuning)
    temperature: float = 0.5
    augment: str = "crop+flip+jitter+gray"
    proj_hidden: int = 512
    proj_dim: int = 128
    head_hidden: int | tuple[int, ...] = RELEASED_HIDDEN  # the released WatermarkMLP's; an int = one hidden layer
    normalize: bool = True  # the head reads L2-normalised features (a copy imitates directions, not the victim's scale)
    seed: int = 0
    amp: bool = True
    device: str = "auto"


class RotationHead(nn.Sequential):
    """The rotation head g (an MLP); with `normalize` it reads L2-normalised features, so that the check does
    not depend on the scale of a suspect's features (a copy stolen from unit-norm answers has its own scale;
    the released head reads raw features: normalize=False)."""

    normalize: bool = False

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return super().forward(F.normalize(feats, dim=1) if self.normalize else feats)


def rotation_head(feature_dim: int, classes: int = 2, hidden: int | tuple[int, ...] = RELEASED_HIDDEN, task: str | None = None,
                  normalize: bool = False) -> nn.Sequential:
    """g: N×D -> N×classes logits, an MLP with ReLUs between the `hidden` widths (default: the released
    WatermarkMLP, D-256-128-classes), on L2-normalised features if `normalize`. `task` ("binary"/"quarter")
    is kept on the module for the check; default: "binary" for 2 classes with the released widths, else "quarter"."""
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    layers: list[nn.Module] = []
    prev = feature_dim
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU(inplace=True)]
        prev = w
    head = RotationHead(*layers, nn.Linear(prev, classes))
    head.normalize = bool(normalize)
    head.task = task or ("binary" if classes == 2 and widths == RELEASED_HIDDEN else "quarter")
    head.hidden = widths
    return head


def rotate_by_angle(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate image i counter-clockwise by degrees[i] about its centre, nearest neighbour, zero fill, same size
    (torchvision's `rotate(img, angle, NEAREST)` pixel for pixel, all images at once). N×C×H×W -> N×C×H×W."""
    n, c, h, w = images.shape
    th = torch.deg2rad(degrees.to(torch.float64).cpu())
    cos, sin = torch.cos(th), torch.sin(th)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(theta.float().to(images.device), [n, c, h, w], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(images.dtype) if not images.is_floating_point() else out


def binary_views(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The binary task's views: every image rotated by U(0°, 180°) (label 0) and by U(180°, 360°) (label 1)
    -> (2N images: the class-0 views then the class-1 views, 2N labels)."""
    n = len(images)
    angles = torch.rand(2, n, generator=generator, dtype=torch.float64) * 180.0
    angles[1] += 180.0
    views = rotate_by_angle(torch.cat([images, images]), angles.flatten())
    labels = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)]).to(images.device)
    return views, labels


def rotate(images: torch.Tensor, k: torch.Tensor, rotations: int = 4) -> torch.Tensor:
    """Rotate image i by k_i · (360/rotations)° (counter-clockwise). images N×C×S×S, k int N -> N×C×S×S."""
    if rotations not in (2, 4):
        raise ValueError(f"rotations must be 2 or 4, got {rotations}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    quarter = k.to(images.device) * (4 // rotations)
    out = images.clone()
    for q in (1, 2, 3):
        sel = quarter == q
        if sel.any():
            out[sel] = torch.rot90(images[sel], q, dims=(2, 3))
    return out


def _features(model, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    if isinstance(model, nn.Module):
        from stealkit.models.encoder import embed

        return embed(model, images, batch_size=batch_size)
    return torch.cat([model.embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).float()


def embed_watermark(images: torch.Tensor, config: WatermarkConfig | dict | None = None, encoder=None, *, progress: bool = True):
    """Train `encoder` (or a new `config.arch` one) jointly with a rotation head on its own uint8 images
    N×3×S×S -> (encoder on CPU, head on CPU, per-epoch log with loss, rot_loss, rot_acc)."""
    from tqdm.auto import tqdm

    from stealkit.augment import Augmenter
    from stealkit.models.encoder import build_encoder
    from stealkit.pretrain.config import PretrainConfig
    from stealkit.pretrain.trainer import SimCLRModel
    from stealkit.runtime import autocast, pick_device, seed_everything
    from stealkit.training import epoch_generator, make_optimizer, prepare_model, seed_epoch

    cfg = config if isinstance(config, WatermarkConfig) else WatermarkConfig(**(config or {}))
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    n = len(images)
    if n < cfg.batch_size:
        raise ValueError(f"{n} images is fewer than one batch of {cfg.batch_size}; lower batch_size")
    if encoder is None:
        if cfg.preserve > 0:
            raise ValueError("preserve keeps a given encoder's features; pass the encoder to fine-tune")
        encoder = build_encoder(cfg.arch, input_size=images.shape[-1])
    pcfg = PretrainConfig(arch=encoder.spec.arch, temperature=cfg.temperature, proj_hidden=cfg.proj_hidden, proj_dim=cfg.proj_dim)
    simclr = prepare_model(SimCLRModel(encoder, pcfg), device).train()
    binary = cfg.task == "binary"
    if not binary and cfg.rotations not in (2, 4):
        raise ValueError(f"rotations must be 2 or 4 for task 'quarter', got {cfg.rotations}")
    head = rotation_head(encoder.feature_dim, 2 if binary else cfg.rotations, cfg.head_hidden, task=cfg.task,
                         normalize=cfg.normalize).to(device).train()
    body = list(simclr.parameters()) if cfg.contrastive else list(encoder.parameters())
    opt = make_optimizer([{"params": body}, {"params": list(head.parameters()), "lr": cfg.head_lr or cfg.lr}], "adam", cfg.lr, device=device)
    frozen = None
    if cfg.preserve > 0:
        import copy

        frozen = copy.deepcopy(simclr.encoder).eval().requires_grad_(False)
    X = images.to(device)
    aug = Augmenter(cfg.augment, images.shape[-1]).to(device)
    steps, log = n // cfg.batch_size, []
    for epoch in tqdm(range(cfg.epochs), desc="watermark", unit="ep", disable=not progress):
        t0 = time.perf_counter()
        seed_epoch(cfg.seed, epoch)
        gen = epoch_generator(cfg.seed, epoch)
        perm = torch.randperm(n, generator=gen).to(device)
        ks = torch.randint(0, 2 if binary else cfg.rotations, (n,), generator=gen).to(device)
        sums = torch.zeros(3, device=device)
        for i in range(steps):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x, k = X[idx], ks[idx]
            with autocast(device, cfg.amp):
                if binary:  # both halves of the circle for every image, as the released WatermarkDataset
                    views, k = binary_views(x, gen)
                    logits = head(simclr.encoder(views)).float()
                else:
                    logits = head(simclr.encoder(rotate(x, k, cfg.rotations))).float()
                rot_loss = F.cross_entropy(logits, k)
                con = simclr.loss(aug(x), aug(x)) if cfg.contrastive else torch.zeros((), device=device)
                if frozen is not None:
                    xa = aug(x)
                    with torch.no_grad():
                        ref = frozen(xa).float()
                    con = con + cfg.preserve * (1 - F.cosine_similarity(simclr.encoder(xa).float(), ref, dim=1)).mean()
            loss = con + cfg.weight * rot_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), rot_loss.detach(), (logits.argmax(1) == k).float().mean()])
        m = (sums / steps).tolist()
        log.append({"epoch": epoch + 1, "loss": m[0], "rot_loss": m[1], "rot_acc": m[2], "seconds": time.perf_counter() - t0})
    return simclr.encoder.cpu().eval(), head.cpu().eval(), log


@dataclass
class WatermarkResult:
    accuracy: float
    correct: int
    trials: int
    chance: float
    p_value: float  # one-sided Wilcoxon signed-rank test of per-image accuracies, H1: above chance
    significant: bool  # p_value < alpha: the watermark is present (victim or stolen copy)
    alpha: float
    rotations: int  # classes of the task (2 for binary)
    p_binomial: float  # binomial test over all predictions as if independent (optimistic)
    task: str = "quarter"

    @property
    def verdict(self) -> str:
        return "watermark present (victim or stolen copy)" if self.significant else "no watermark (independent encoder)"

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


@torch.no_grad()
def watermark_accuracy(suspect, head: nn.Module, images: torch.Tensor, rotations: int | None = None, *, alpha: float = 0.01,
                       batch_size: int = 512, seed: int = 0) -> WatermarkResult:
    """Accuracy of the victim's fixed head on the suspect's representations of rotated images, tested per
    image against chance. Binary task: every image at one angle in (0°, 180°) and one in (180°, 360°),
    drawn from `seed` (2N predictions); quarter task: every image under every one of the `rotations` turns."""
    from scipy.stats import binomtest

    head = head.cpu().eval()
    task = getattr(head, "task", "quarter")
    classes = head[-1].out_features
    if task == "binary":
        views, labels = binary_views(images.cpu(), torch.Generator().manual_seed(seed))
        feats = _features(suspect, views, batch_size).float().cpu()
        _check_width(feats, head)
        correct_view = (head(feats).argmax(1) == labels).float()
        hits, per = correct_view.view(2, len(images)).sum(0), 2
    else:
        per = rotations or classes
        hits = torch.zeros(len(images))
        for r in range(per):
            k = torch.full((len(images),), r, dtype=torch.long)
            feats = _features(suspect, rotate(images, k, per), batch_size).float().cpu()
            _check_width(feats, head)
            hits += (head(feats).argmax(1) == r).float()
    correct, trials = int(hits.sum()), len(images) * per
    chance = 1.0 / per
    p = per_image_p_value(hits / per, chance)
    p_binomial = float(binomtest(correct, trials, chance, alternative="greater").pvalue)
    return WatermarkResult(correct / trials, correct, trials, chance, p, bool(p < alpha), alpha, per, p_binomial, task)


def _check_width(feats: torch.Tensor, head: nn.Module) -> None:
    if feats.shape[1] != head[0].in_features:
        raise ValueError(f"suspect returns {feats.shape[1]}-d features; the watermark head expects {head[0].in_features}-d")


def per_image_p_value(accuracies: torch.Tensor, chance: float, tol: float = 1e-9) -> float:
    """One-sided Wilcoxon signed-rank test over images, H1: per-image accuracies (N values in [0, 1]) lie
    above chance. Images scoring exactly chance carry no sign and are dropped; none left -> 1.0.
    Rank-based, so it needs no normality of the few-valued accuracies; all n images above chance give
    at best 0.5^n. It assumes differences symmetric about 0 under H0: exact for rotations=2; for 4,
    Binomial(4, 1/4)/4 is skewed, which makes p slightly optimistic for very many images (tens of
    thousands; negligible at the default few hundred). Ties can make p move slightly against a
    single image's improvement."""
    import warnings

    from scipy.stats import wilcoxon

    d = accuracies.double().numpy() - chance
    d = d[abs(d) > tol]
    if len(d) == 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's normal approximation warns on degenerate ties
        return float(wilcoxon(d, alternative="greater").pvalue)


def head_path(encoder_path: str | Path) -> Path:
    """Where the head of a watermarked checkpoint lives: <stem>.wmhead.safetensors beside <stem>.safetensors."""
    p = Path(encoder_path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".wmhead.safetensors")


def save_watermark_head(head: nn.Module, path: str | Path) -> Path:
    """Head weights + self-describing metadata (feature_dim, hidden, rotations) in one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    meta = {"format": HEAD_FORMAT, "feature_dim": head[0].in_features, "hidden": [m.out_features for m in linears[:-1]],
            "classes": head[-1].out_features, "task": getattr(head, "task", "quarter"),
            "normalize": bool(getattr(head, "normalize", False))}
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(path), metadata={"stealkit": json.dumps(meta)})
    return path


def load_watermark_head(path: str | Path) -> nn.Module:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        raw = (f.metadata() or {}).get("stealkit")
    meta = json.loads(raw) if raw else {}
    if meta.get("format") == "stealkit-watermark-head/1":  # a quarter-turn head with one hidden layer
        head = rotation_head(meta["feature_dim"], meta["rotations"], meta["hidden"], task="quarter")
    elif meta.get("format") == HEAD_FORMAT:
        head = rotation_head(meta["feature_dim"], meta["classes"], tuple(meta["hidden"]), task=meta["task"],
                             normalize=meta.get("normalize", False))  # heads written before the flag read raw features
    else:
        raise ValueError(f"{path} is not a stealkit watermark head (format {meta.get('format')!r})")
    head.load_state_dict(load_file(str(path)), strict=True)
    return head.eval()


def save_watermarked(encoder, head: nn.Module, path: str | Path, **info) -> tuple[Path, Path]:
    """Encoder checkpoint (stealkit format, sidecar notes the watermark) + its head beside it."""
    from stealkit.models.checkpoint import save_encoder

    hp = head_path(path)
    weights = save_encoder(encoder, path, watermark={"head": hp.name, "task": getattr(head, "task", "quarter"),
                                                     "rotations": head[-1].out_features}, **info)
    return weights, save_watermark_head(head, hp)
