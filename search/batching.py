"""Coalescing concurrent calls into one batched call.

A text query is one forward pass of the text tower, and on a CPU that pass mostly streams the
weights through memory: eight queries in one batch cost about 2.5x one query, not 8x. When
requests arrive together (several people, or one page firing several searches), the thread
that finds the model idle runs everything queued so far in one batch; the others wait for
their row. A lone request runs at once: nothing waits for a batch to fill.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class _Call(Generic[In, Out]):
    __slots__ = ("item", "done", "value", "error")

    def __init__(self, item: In):
        self.item = item
        self.done = False
        self.value: Out | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[In, Out]):
    """``coalescer(item)`` returns ``batch_fn([..., item, ...])[its index]``; thread-safe.

    ``batch_fn`` runs in one thread at a time, on at most ``max_batch`` items, in arrival order.
    If it raises, every call in that batch raises the same exception.
    """

    def __init__(self, batch_fn: Callable[[list[In]], Sequence[Out]], max_batch: int = 16):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._batch_fn = batch_fn
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Call[In, Out]] = []
        self._running = False

    def __call__(self, item: In) -> Out:
        call: _Call[In, Out] = _Call(item)
        with self._cond:
            self._queue.append(call)
        while True:
            with self._cond:
                while self._running and not call.done:
                    self._cond.wait()
                if call.done:
                    break
                # The model is idle: this thread runs the oldest calls (its own among them, or next time).
                self._running = True
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
            self._run(batch)
        if call.error is not None:
            raise call.error
        return call.value  # type: ignore[return-value]

    def _run(self, batch: list[_Call[In, Out]]) -> None:
        try:
            values = self._batch_fn([c.item for c in batch])
            if len(values) != len(batch):
                raise RuntimeError(f"batch function returned {len(values)} results for {len(batch)} items")
            for c, v in zip(batch, values):
                c.value = v
        except BaseException as exc:  # each waiting caller gets the failure, not a hang
            for c in batch:
                c.error = exc
        finally:
            with self._cond:
                for c in batch:
                    c.done = True
                self._running = False
                self._cond.notify_all()
