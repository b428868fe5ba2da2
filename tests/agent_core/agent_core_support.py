"""Helpers shared by the agent core tests."""

from __future__ import annotations


class Progress:
    """Records progress calls: (phase, bytes_done)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, phase: str, done: int) -> None:
        self.calls.append((phase, done))

    @property
    def phases(self) -> list[str]:
        out: list[str] = []
        for phase, _ in self.calls:
            if not out or out[-1] != phase:
                out.append(phase)
        return out
