"""A training step that runs eagerly, or as one captured CUDA graph (docs/architecture.md; at the paper's batch size of 64 a step is launch-bound).

At the paper's stealing batch size (64) a step is launch-bound; replaying the whole step
(forward, loss, backward, optimiser) as one CUDA graph removes the launch gaps. Inputs are
copied into static buffers before each replay. The warm-up steps that capture needs are undone
afterwards (weights, buffers and optimiser state restored), so graph and eager training take the
same sequence of steps from the same state.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


class TrainStep:
    """step(*batch) -> detached 1-D tensor of metrics; `body(*batch)` returns (loss, metrics tensor)."""

    def __init__(self, model: nn.Module, optimizer, body: Callable, use_graph: bool = False, warmup: int = 3):
        self.model, self.opt, self.body = model, optimizer, body
        self.use_graph, self.warmup = use_graph, warmup
        self.graph = None
        self.static_in: list[torch.Tensor] = []
        self.static_out = None

    def _eager(self, *batch) -> torch.Tensor:
        loss, metrics = self.body(*batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return metrics.detach()

    def _snapshot(self):
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_state = {p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in self.opt.state.items()}
        return model_state, opt_state

    def _restore(self, snap) -> None:
        model_state, opt_state = snap
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(model_state[k])
            for p, s in self.opt.state.items():
                saved = opt_state.get(p)
                for k, v in s.items():
                    if torch.is_tensor(v):
                        v.copy_(saved[k]) if saved is not None else v.zero_()

    def _capture(self, batch) -> None:
        self.static_in = [b.clone() for b in batch]
        snap = self._snapshot()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._eager(*self.static_in)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            loss, metrics = self.body(*self.static_in)
            loss.backward()
            self.opt.step()
            self.static_out = metrics.detach()
        self._restore(snap)

    def __call__(self, *batch) -> torch.Tensor:
        if not self.use_graph:
            return self._eager(*batch)
        if self.graph is None:
            self._capture(batch)
        for dst, src in zip(self.static_in, batch):
            dst.copy_(src)
        self.graph.replay()
        return self.static_out
