"""The one retry loop (ckpt.retry) on looptime's virtual clock: the pauses it takes are read
off the loop's clock, so a test of a 60 s backoff takes no real time."""

from __future__ import annotations

import asyncio
import random

import pytest

from ckpt.retry import Backoff, retry

pytestmark = pytest.mark.looptime


class Flaky:
    """Fails with the given exceptions in turn, then answers `value`; records when it ran."""

    def __init__(self, *failures: Exception, value: str = "ok") -> None:
        self.failures = list(failures)
        self.value = value
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(asyncio.get_running_loop().time())
        if self.failures:
            raise self.failures.pop(0)
        return self.value


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    backoff = Backoff(first=0.5, cap=3.0, factor=2.0)
    assert [backoff.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    # Far retries neither overflow nor pass the cap.
    assert backoff.delay(10_000) == 3.0
    assert Backoff(first=1.0, cap=5.0, factor=1.0).delay(50) == 1.0


def test_jitter_stays_within_zero_and_the_bound() -> None:
    random.seed(14)
    backoff = Backoff(first=1.0, cap=4.0, jitter=True)
    samples = [backoff.delay(n) for n in range(3) for _ in range(200)]
    assert all(0 <= s <= 4.0 for s in samples)
    assert all(0 <= backoff.delay(0) <= 1.0 for _ in range(200))
    assert len(set(samples)) > 100  # spread out, not one value


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts"),
        ({"first": -1.0}, "delays"),
        ({"cap": -1.0}, "delays"),
        ({"factor": 0.5}, "factor"),
    ],
)
def test_invalid_backoffs_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)  # type: ignore[arg-type]


async def test_retries_after_each_backoff_pause_then_returns() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    call = Flaky(ConnectionError("a"), ConnectionError("b"), ConnectionError("c"))
    result = await retry(call, Backoff(first=1.0, cap=3.0), retry_on=ConnectionError)
    assert result == "ok"
    # Pauses of 1, 2 and 3 (capped) seconds between the four calls, in virtual time.
    assert [round(t - start, 6) for t in call.calls] == [0.0, 1.0, 3.0, 6.0]


async def test_on_retry_sees_each_retried_exception_before_the_pause() -> None:
    loop = asyncio.get_running_loop()
    first, second = TimeoutError("one"), TimeoutError("two")
    call = Flaky(first, second)
    seen: list[tuple[Exception, float]] = []

    async def on_retry(exc: Exception) -> None:
        seen.append((exc, loop.time()))

    start = loop.time()
    await retry(call, Backoff(first=5.0, cap=5.0), retry_on=TimeoutError, on_retry=on_retry)
    assert [(exc, round(t - start, 6)) for exc, t in seen] == [(first, 0.0), (second, 5.0)]


async def test_bounded_attempts_raise_the_last_exception_without_a_final_pause() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    last = ConnectionError("third")
    call = Flaky(ConnectionError("first"), ConnectionError("second"), last)
    with pytest.raises(ConnectionError) as raised:
        await retry(call, Backoff(first=1.0, cap=10.0, attempts=3), retry_on=ConnectionError)
    assert raised.value is last
    assert len(call.calls) == 3
    # 1 s and 2 s between the calls; no pause after the last failure.
    assert round(loop.time() - start, 6) == 3.0


async def test_one_attempt_means_no_retry() -> None:
    call = Flaky(ConnectionError("once"))
    with pytest.raises(ConnectionError):
        await retry(call, Backoff(attempts=1), retry_on=ConnectionError)
    assert len(call.calls) == 1


async def test_other_exceptions_propagate_at_once() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    call = Flaky(ConnectionError("retried"), KeyError("not retried"))
    with pytest.raises(KeyError):
        await retry(call, Backoff(first=2.0), retry_on=(ConnectionError, TimeoutError))
    assert len(call.calls) == 2
    assert round(loop.time() - start, 6) == 2.0


async def test_unbounded_retries_end_at_the_callers_deadline() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    never = Flaky(*[ConnectionError(str(n)) for n in range(10_000)])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(60):
            await retry(never, Backoff(first=1.0, cap=8.0), retry_on=ConnectionError)
    # 1 + 2 + 4 + 8 * 6 = 55 s of pauses fit in the minute: 10 calls, then the deadline.
    assert len(never.calls) == 10
    assert round(loop.time() - start, 6) == 60.0
