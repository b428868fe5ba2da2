"""kubectl's output shapes for `kubectl ckpt`: `-o json|yaml` (one resource, or a `List` of
them as `kubectl get` prints it), `-o name` (`checkpoint.ckpt.dev/NAME`), and the plain
column tables of `kubectl get` and `kubectl describe`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import yaml

from ckpt.apis.checkpoint import GROUP

# What kubectl prints for a cell without a value: a whitespace-free placeholder, so that
# scripts splitting rows on whitespace keep the columns where they are.
NONE = "<none>"
# kubectl's tabwriter pads each column with three spaces.
PADDING = 3


class GetOutput(StrEnum):
    """`-o` of the listing verb."""

    json = "json"
    yaml = "yaml"
    wide = "wide"
    name = "name"


class ResourceOutput(StrEnum):
    """`-o` of the verbs that create a resource (as `kubectl create -o`)."""

    json = "json"
    yaml = "yaml"
    name = "name"


def kubectl_list(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Resources as `kubectl get -o json` wraps several of them."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": list(items),
        "metadata": {"resourceVersion": ""},
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes a value met twice in full each time: YAML anchors and aliases (&id001) are
    not what kubectl prints, and not every reader follows them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(document: Mapping[str, Any], output: str) -> str:
    """`document` as -o json (4-space indent, as kubectl) or -o yaml, ending in a newline."""
    if output == "json":
        return json.dumps(document, indent=4) + "\n"
    if output == "yaml":
        return yaml.dump(
            dict(document), Dumper=_PlainDumper, sort_keys=False, default_flow_style=False
        )
    raise ValueError(f"not a document output: {output}")


def resource_name(resource: Mapping[str, Any]) -> str:
    """-o name: `checkpoint.ckpt.dev/NAME`, the form kubectl accepts back as an argument."""
    kind = str(resource.get("kind") or "").lower()
    return f"{kind}.{GROUP}/{resource['metadata']['name']}"


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """A table as `kubectl get` prints one: upper-case headers, left-aligned columns padded
    to their widest cell, empty cells as <none>, no trailing spaces."""
    cells = [list(headers), *([cell or NONE for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = "".join(
            cell.ljust(width + PADDING) for cell, width in zip(row[:-1], widths, strict=False)
        )
        lines.append(f"{indent}{padded}{row[-1]}".rstrip())
    return "\n".join(lines) + "\n"


def fields(pairs: Sequence[tuple[str, object]], indent: str = "") -> str:
    """`Key:  value` lines as `kubectl describe` prints them, values aligned; pairs whose
    value is None or empty are left out."""
    shown = [(key, str(value)) for key, value in pairs if value not in (None, "")]
    if not shown:
        return ""
    width = max(len(key) for key, _ in shown) + 1 + PADDING
    return "".join(f"{indent}{(key + ':').ljust(width)}{value}\n" for key, value in shown)
