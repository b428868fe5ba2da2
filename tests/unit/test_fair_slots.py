"""The agent's job slots shared fairly between namespaces: one namespace's burst of jobs does
not make another's wait behind it (security finding 7)."""

from __future__ import annotations

import asyncio

import pytest

from ckpt.agent.slots import FairSlots


async def _job(slots: FairSlots, namespace: str, name: str, order: list[str],
               hold: asyncio.Event) -> None:
    async with slots.take(namespace):
        order.append(name)
        await hold.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_burst_does_not_starve_another_namespace() -> None:
    slots = FairSlots(2)
    order: list[str] = []
    release = {f"burst-{i}": asyncio.Event() for i in range(20)} | {"evict": asyncio.Event()}
    tasks = [asyncio.create_task(_job(slots, "batch", f"burst-{i}", order, release[f"burst-{i}"]))
             for i in range(20)]
    await _settle()
    # The eviction's checkpoint arrives behind twenty queued jobs of another namespace.
    tasks.append(asyncio.create_task(_job(slots, "web", "evict", order, release["evict"])))
    await _settle()
    assert order == ["burst-0", "burst-1"] and slots.waiting() == {"batch": 18, "web": 1}
    release["burst-0"].set()
    await _settle()
    # The freed slot goes to the namespace with nothing running, not to the next in line.
    assert order[-1] == "evict"
    for event in release.values():
        event.set()
    await asyncio.gather(*tasks)
    assert order[3:] == [f"burst-{i}" for i in range(2, 20)]  # in order within a namespace
    assert slots.running == {} and slots.waiting() == {}


async def test_namespaces_with_as_many_running_take_turns_by_waiting_time() -> None:
    slots = FairSlots(1)
    order: list[str] = []
    events = {name: asyncio.Event() for name in ("a1", "b1", "a2", "b2")}
    tasks = []
    for name in ("a1", "a2", "b1", "b2"):
        tasks.append(asyncio.create_task(_job(slots, name[0], name, order, events[name])))
        await _settle()
    for name in ("a1", "b1", "a2", "b2"):
        events[name].set()
        await _settle()
    await asyncio.gather(*tasks)
    assert order == ["a1", "b1", "a2", "b2"]


async def test_a_cancelled_waiter_gives_up_its_place_and_a_granted_one_its_slot() -> None:
    slots = FairSlots(1)
    order: list[str] = []
    hold = asyncio.Event()
    first = asyncio.create_task(_job(slots, "a", "first", order, hold))
    await _settle()
    waiting = asyncio.create_task(_job(slots, "b", "cancelled", order, hold))
    third = asyncio.create_task(_job(slots, "c", "third", order, asyncio.Event()))
    await _settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    hold.set()
    await first
    await _settle()
    assert order == ["first", "third"] and slots.running == {"c": 1}
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert slots.running == {} and slots.waiting() == {}
    async with slots.take("d"):
        assert slots.running == {"d": 1}


def test_a_node_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairSlots(0)
