"""The two kinds of ckpt.dev resource a user describes, and every name kubectl accepts for
each: singular, plural, the CRD's short name, and those qualified by the group."""

from __future__ import annotations

from enum import StrEnum

from ckpt.apis.checkpoint import GROUP


class Kind(StrEnum):
    checkpoint = "checkpoint"
    restore = "restore"


# The CRDs' short names (ckpt.apis.crd, ckpt.apis.restore_crd).
_SHORT = {Kind.checkpoint: "ckpt", Kind.restore: "rst"}

KINDS: dict[str, Kind] = {
    alias: kind
    for kind, short in _SHORT.items()
    for alias in (kind.value, f"{kind.value}s", short, f"{kind.value}.{GROUP}",
                  f"{kind.value}s.{GROUP}")
}


def kind_of(name: str) -> Kind | None:
    return KINDS.get(name.lower())
