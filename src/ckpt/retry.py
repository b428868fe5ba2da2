"""The one retry loop: exponential backoff, optionally jittered and bounded in attempts.

Used by the checkpoints API client (bounded attempts, full jitter so many operator workers do
not retry in lock-step) and by the operator's flows (unbounded: the resource's deadline, an
`asyncio.timeout` around the flow, ends the loop).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# 2**64 times any sensible first delay is past every cap; larger exponents overflow floats.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Backoff:
    """Delays of `first * factor**n`, each at most `cap`; `attempts` None means no limit."""

    first: float = 0.1
    cap: float = 2.0
    factor: float = 2.0
    attempts: int | None = None
    jitter: bool = False

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.first < 0 or self.cap < 0 or self.factor < 1:
            raise ValueError("delays must be >= 0 and factor >= 1")

    def delay(self, retry: int) -> float:
        """The pause before retry number `retry` (0 is the pause after the first failure)."""
        bound = min(self.cap, self.first * self.factor ** min(retry, _MAX_EXPONENT))
        # Full jitter: uniform in [0, bound]; this is load spreading, not a secret.
        return random.uniform(0, bound) if self.jitter else bound  # noqa: S311


async def retry(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_on: type[Exception] | tuple[type[Exception], ...],
    on_retry: Callable[[Exception], Awaitable[None]] | None = None,
) -> T:
    """`call()` until it returns; exceptions of `retry_on` are retried after a pause (after
    `on_retry` saw them), others propagate, and the last one propagates once `attempts` ran out.
    """
    tried = 0
    while True:
        try:
            return await call()
        except retry_on as exc:
            tried += 1
            if backoff.attempts is not None and tried >= backoff.attempts:
                raise
            if on_retry is not None:
                await on_retry(exc)
            await asyncio.sleep(backoff.delay(tried - 1))
