"""Token-bucket rate limits, per key (a tenant, or a client address for failed logins).

In memory, per server process: a limit is per replica, which is what bounds the load one
tenant can put on that replica's database connections. The event loop is the only caller, so
no lock is needed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable


class RateLimiter:
    """`rate` tokens per second refill each key's bucket up to `burst`; a request takes one."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens left, when they were counted)
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _level(self, key: Hashable, now: float) -> float:
        tokens, then = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate)

    def retry_after(self, key: Hashable) -> float:
        """Seconds until `key` may make a request; 0 when it may now. Takes nothing."""
        if not self.enabled:
            return 0.0
        level = self._level(key, self._clock())
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def take(self, key: Hashable) -> float:
        """Take a token for `key` when there is one and return 0; else the seconds to wait."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        level = self._level(key, now)
        if level < 1:
            self._buckets[key] = (level, now)
            return (1 - level) / self.rate
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._forget_full(now)
        self._buckets[key] = (level - 1, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        # A full bucket is the same as no bucket: forgetting those loses nothing. Should every
        # key be in use (a flood of distinct keys), starting over only lets each a burst again.
        full = [k for k in self._buckets if self._level(k, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds (RFC 9110 10.2.3); never 0, which invites a spin."""
    return str(max(1, math.ceil(seconds)))
