"""GPU correctness check: the CUDA-graph training step follows the same trajectory as eager steps.

Trains a stolen encoder and a SimCLR encoder twice from the same seed, once eagerly and once with the
step captured as a CUDA graph (fp32, so the comparison is not blurred by bf16), and prints the
per-epoch losses and the largest relative weight difference. Writes JSON.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from stealkit.attacks.stolen_encoder import StealConfig, train_stolen_encoder
from stealkit.pretrain.config import PretrainConfig
from stealkit.pretrain.trainer import pretrain
from stealkit.runtime import environment


def max_rel_diff(a, b) -> float:
    worst = 0.0
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        if x.is_floating_point():
            worst = max(worst, float((x - y).norm() / (x.norm() + 1e-12)))
    return worst


def main(out: str) -> None:
    torch.backends.cudnn.deterministic = True
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, generator=g)
    feats = torch.randn(512, 512, generator=g)
    res = {"environment": environment()}
    for name, fn in {
        "steal": lambda graph: train_stolen_encoder(images, feats, StealConfig(arch="resnet18", epochs=3, batch_size=64, amp=False, cuda_graph=graph), device="cuda", progress=False),
        "simclr": lambda graph: pretrain(images, PretrainConfig(arch="resnet18", epochs=3, batch_size=128, amp=False, cuda_graph=graph, device="cuda"), progress=False),
        "moco": lambda graph: pretrain(images, PretrainConfig(method="moco", arch="resnet18", epochs=3, batch_size=128, moco_queue=1024, amp=False, cuda_graph=graph, device="cuda"), progress=False),
    }.items():
        t0 = time.perf_counter()
        eager, log_e = fn(False)
        t1 = time.perf_counter()
        graph, log_g = fn(True)
        t2 = time.perf_counter()
        res[name] = {"eager_loss": [e["loss"] for e in log_e], "graph_loss": [e["loss"] for e in log_g],
                     "max_rel_weight_diff": max_rel_diff(eager, graph), "eager_s": t1 - t0, "graph_s": t2 - t1}
        print(name, json.dumps(res[name]), flush=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gpu_check.json")
