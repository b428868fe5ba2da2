"""A node's job slots, shared fairly between namespaces.

CRIU dumps and restore staging are heavy on a node's memory and disk, so an agent runs only a
few at once. A plain semaphore hands freed slots out in arrival order: one namespace that
submits fifty checkpoints at once would make every other namespace's work, a checkpoint
taken because its node is being drained included, wait behind all fifty. Here a freed slot
goes to the waiting namespace with the fewest jobs running, among those to the one served
least recently (namespaces take turns), then to the one that has waited longest; within a
namespace, first come first served.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class _Waiter:
    order: int
    granted: asyncio.Future[None]


class FairSlots:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.running: Counter[str] = Counter()
        self._free = capacity
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._order = itertools.count()
        self._served: dict[str, int] = {}  # namespace -> when it last got a slot

    @asynccontextmanager
    async def take(self, namespace: str) -> AsyncIterator[None]:
        """Holds one slot for `namespace` for the body of the `async with`."""
        await self._acquire(namespace)
        try:
            yield
        finally:
            self._release(namespace)

    def waiting(self) -> dict[str, int]:
        return {ns: len(q) for ns, q in self._waiting.items() if q}

    async def _acquire(self, namespace: str) -> None:
        if self._free > 0 and not any(self._waiting.values()):
            self._grant(namespace)
            return
        waiter = _Waiter(next(self._order), asyncio.get_running_loop().create_future())
        self._waiting.setdefault(namespace, deque()).append(waiter)
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self._release(namespace)  # granted as it was cancelled: hand it on
            else:
                self._waiting[namespace].remove(waiter)
            raise

    def _grant(self, namespace: str) -> None:
        self._free -= 1
        self.running[namespace] += 1
        self._served[namespace] = next(self._order)

    def _release(self, namespace: str) -> None:
        self.running[namespace] -= 1
        if self.running[namespace] <= 0:
            del self.running[namespace]
        self._free += 1
        self._dispatch()

    def _dispatch(self) -> None:
        while self._free > 0:
            queued = [(self.running[ns], self._served.get(ns, -1), q[0].order, ns)
                      for ns, q in self._waiting.items() if q]
            if not queued:
                return
            namespace = min(queued)[-1]
            waiter = self._waiting[namespace].popleft()
            if waiter.granted.cancelled():
                continue
            self._grant(namespace)
            waiter.granted.set_result(None)
