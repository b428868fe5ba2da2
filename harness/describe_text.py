"""Reading `kubectl ckpt describe` output back in tests: its `Key:  value` lines by section."""

from __future__ import annotations


def sections(text: str) -> dict[str, dict[str, str]]:
    """describe's `Key:  value` lines by section (top-level ones under "")."""
    found: dict[str, dict[str, str]] = {"": {}}
    current = ""
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if line.startswith(" "):
            found[current][key] = value.strip()
        elif value.strip():
            found[""][key] = value.strip()
        else:
            current = key
            found[current] = {}
    return found
