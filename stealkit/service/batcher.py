"""Cross-request batching: the images of concurrent requests run through the encoder as one forward pass.

Requests put their decoded groups on a queue and await their features; one thread takes the first
waiting request, waits at most `wait_s` for more (never once `max_images` are waiting), and runs each
image size as forward passes of at most `max_images` images (and `max_pixels` input pixels) through
`api_answers` — the encoder in fp32 and, if set, the L2 normalisation. The defence is not applied here:
each request applies its account's defence to its own rows afterwards, so defence state and billing
stay per account. The `mode` from invariance.py keeps every answer's bits independent of what it was
batched with: "dynamic" pads a lone image to a pair, "fixed" pads every forward to `max_images` rows.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from stealkit.service.decode import Group
from stealkit.targets.answers import api_answers

log = logging.getLogger("stealkit.service")


@dataclass
class _Item:
    groups: list[Group]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)
    out: list[torch.Tensor] = field(default_factory=list)


class Batcher:
    def __init__(self, encoder, feature_dim: int, *, mode: str, normalize: bool, max_images: int, wait_s: float,
                 max_pixels: int, metrics=None):
        if mode not in ("dynamic", "fixed"):
            raise ValueError(f"batching mode must be 'dynamic' or 'fixed', got {mode!r}")
        self.encoder, self.dim, self.mode, self.normalize = encoder, feature_dim, mode, normalize
        self.max_images, self.wait_s, self.max_pixels, self.metrics = max_images, wait_s, max_pixels, metrics
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stealkit-batcher")
        self.forwards = 0  # forward passes run (tests, metrics)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    async def embed(self, groups: list[Group]) -> list[torch.Tensor]:
        """Features (float32 k×D, before any defence) of each group, in order."""
        loop = asyncio.get_running_loop()
        item = _Item(groups, loop, loop.create_future())
        self._queue.put(item)
        return await item.future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # ---- the batching thread ------------------------------------------------------------------
    def _take(self) -> list[_Item] | None:
        first = self._queue.get()
        if first is None:
            return None
        items, n = [first], sum(len(g.index) for g in first.groups)
        deadline = time.monotonic() + self.wait_s
        while n < self.max_images:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            items.append(item)
            n += sum(len(g.index) for g in item.groups)
        return items

    def _run(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            try:
                self._answer(items)
            except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
                log.exception("batched forward pass failed")
                for it in items:
                    _resolve(it, exc=exc)
            else:
                for it in items:
                    _resolve(it, result=it.out)

    def _chunk(self, h: int, w: int) -> int:
        return max(2, min(self.max_images, self.max_pixels // (h * w)))

    def _answer(self, items: list[_Item]) -> None:
        started = time.perf_counter()
        by_size: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for it in items:
            it.out = [torch.empty(len(g.index), self.dim, dtype=torch.float32) for g in it.groups]
            for g, out in zip(it.groups, it.out):
                by_size.setdefault(tuple(g.images.shape[-2:]), []).append((g.images, out))
        for (h, w), parts in by_size.items():
            size = self._chunk(h, w)
            pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input rows, where their answers go)
            rows = 0
            for images, out in parts:
                for s in range(0, len(images), size):
                    piece = (images[s : s + size], out[s : s + size])
                    if rows + len(piece[0]) > size:
                        self._forward(pending, size)
                        pending, rows = [], 0
                    pending.append(piece)
                    rows += len(piece[0])
            if pending:
                self._forward(pending, size)
        if self.metrics is not None:
            self.metrics.batch(requests=len(items), images=sum(sum(len(g.index) for g in it.groups) for it in items),
                               queued=[started - it.queued for it in items], seconds=time.perf_counter() - started)

    def _forward(self, pending: list[tuple[torch.Tensor, torch.Tensor]], size: int) -> None:
        x = torch.cat([p for p, _ in pending]) if len(pending) > 1 else pending[0][0]
        n = len(x)
        target = size if self.mode == "fixed" else max(2, n)
        if target > n:  # pad with copies of the last row: the real rows' answers do not depend on them
            x = torch.cat([x, x[-1:].expand(target - n, -1, -1, -1)])
        feats = api_answers(self.encoder, x, normalize=self.normalize, batch_size=len(x))
        self.forwards += 1
        at = 0
        for p, out in pending:
            out.copy_(feats[at : at + len(p)])
            at += len(p)


def _resolve(item: _Item, result=None, exc: BaseException | None = None) -> None:
    def done():
        if item.future.done():
            return
        if exc is not None:
            item.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
        else:
            item.future.set_result(result)

    try:
        item.loop.call_soon_threadsafe(done)
    except RuntimeError:  # the event loop is closed: nobody waits any more
        pass
