"""What binds an API record and its archive to one Checkpoint, and the checks that a Restore or
a deletion acts only on what the operator bound.

A Checkpoint's status names the API record, the archive, its StorageLocation and its node, but
a status is only as trustworthy as everyone who may patch `checkpoints/status`. So when the
operator records a checkpoint it writes into the API record's info what no status can change
afterwards: the Checkpoint's namespace, pod and uid (metadata.uid, set by the apiserver), and
the archive's URL and location (the API refuses a new info once the record is ready). Before a
Restore stages an archive, or a deletion deprecates a record or deletes an archive, the status
must agree with that record, and the record with the Checkpoint at hand.

Even whoever holds the operator's API token and writes a record of their own cannot reach
another namespace's archive: the archive key must be exactly
``<location prefix>/<namespace>/<record id>.tar[.zst][.age]``, the key an agent writes for a
checkpoint of that namespace (`Destination.key_for`), so it names this namespace and this
record, never another's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ckpt.apis.storagelocation import Destination, LocationType
from ckpt.contract.checkpoints_api import Checkpoint

# Keys of the API record's info that bind it (written by `Checkpointer._record`), and where
# it was taken (node, agent pod).
NAMESPACE = "namespace"
POD = "pod"
CHECKPOINT_UID = "checkpoint_uid"
RESTORE_PATH = "restore_path"
STORAGE_LOCATION = "storage_location"
NODE = "node"
AGENT = "agent"

# Condition reasons.
NOT_BOUND = "CheckpointNotBound"
MISMATCH = "BindingMismatch"
OUTSIDE = "ArchiveOutsideNamespace"

# One segment of an archive key, as `ckpt.storage.objects` accepts them (no "." or "..").
_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_SUFFIXES = (".tar.zst", ".tar", ".tar.zst.age", ".tar.age")


class NotBound(Exception):
    """The status names a record or an archive the operator did not bind to this Checkpoint;
    nothing may be restored, deprecated or deleted through it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Claim:
    """What a Checkpoint says of its archive: `namespace`, `name` and `uid` from its metadata
    (the apiserver's), `pod` from its immutable spec, the rest from its status (anyone's who
    may write it)."""

    namespace: str
    name: str
    uid: str
    pod: str
    checkpoint_id: str
    restore_path: str
    storage_location: str | None = None
    node: str | None = None


def record_info(
    *, namespace: str, pod: str, uid: str, restore_path: str, storage_location: str | None,
) -> dict[str, Any]:
    """The binding part of the info the operator writes into a checkpoint's API record."""
    return {
        NAMESPACE: namespace,
        POD: pod,
        CHECKPOINT_UID: uid,
        RESTORE_PATH: restore_path,
        STORAGE_LOCATION: storage_location,
    }


def info_of(record: Checkpoint) -> Mapping[str, Any]:
    return record.info if isinstance(record.info, Mapping) else {}


def is_bound(record: Checkpoint) -> bool:
    """Whether the record names the Checkpoint it was taken for (an older operator's records
    and those of checkpoints that failed before recording do not)."""
    return bool(info_of(record).get(CHECKPOINT_UID))


def check_owner(record: Checkpoint, claim: Claim) -> None:
    """The API record names this Checkpoint: its namespace, uid and pod. Messages name
    nothing of another namespace's."""
    what = f"checkpoint {claim.name}: API record {record.id}"
    info = info_of(record)
    if not info.get(CHECKPOINT_UID):
        raise NotBound(
            NOT_BOUND,
            f"{what} does not name the Checkpoint it was taken for (recorded before ckpt "
            "bound records to Checkpoints, or never completed); take a new Checkpoint",
        )
    if info.get(NAMESPACE) != claim.namespace:
        raise NotBound(MISMATCH, f"{what} belongs to another namespace than {claim.namespace}")
    if info[CHECKPOINT_UID] != claim.uid:
        raise NotBound(
            MISMATCH, f"{what} was taken for another Checkpoint (uid is not {claim.uid})"
        )
    if info.get(POD) != claim.pod:
        raise NotBound(MISMATCH, f"{what} is of another pod than {claim.pod}")


def check_record(record: Checkpoint, claim: Claim) -> None:
    """The API record is the one the operator bound to this Checkpoint (`check_owner`), and
    the status names its archive, location and node."""
    check_owner(record, claim)
    what = f"checkpoint {claim.name}: API record {record.id}"
    info = info_of(record)
    if not info.get(RESTORE_PATH) or info[RESTORE_PATH] != claim.restore_path:
        raise NotBound(
            MISMATCH, f"{what} holds another archive than status.restorePath names"
        )
    if (info.get(STORAGE_LOCATION) or None) != (claim.storage_location or None):
        raise NotBound(
            MISMATCH, f"{what} is in another StorageLocation than status.storageLocation names"
        )
    if claim.node is not None and info.get(NODE) != claim.node:
        raise NotBound(MISMATCH, f"{what} was taken on another node than {claim.node}")


def check_archive(claim: Claim, location: Destination | None) -> str:
    """The archive's key in `location` (None: the agents' own node-local folder), once it is
    exactly the key of this namespace's checkpoint `claim.checkpoint_id` there."""
    url = claim.restore_path
    refused = NotBound(
        OUTSIDE,
        f"checkpoint {claim.name}: its archive is not under namespace {claim.namespace}'s "
        "prefix of " + (f"StorageLocation {location.location}" if location else
                        "the node-local archive folder"),
    )
    parts = urlsplit(url)
    s3 = location is not None and location.type is LocationType.s3
    bucket = location.bucket if location is not None else None
    if parts.query or parts.fragment or not parts.path.startswith("/"):
        raise refused
    if s3:
        if parts.scheme != "s3" or parts.netloc != bucket:
            raise refused
    elif parts.scheme not in ("file", "") or parts.netloc:
        # A node-local archive: a file URL (or, as older agents wrote it, a bare path).
        raise refused
    segments = parts.path.removeprefix("/").split("/")
    if not all(_SEGMENT.match(s) for s in segments):
        raise refused
    prefix = [s for s in (location.prefix if location else "").split("/") if s]
    expected = [*prefix, claim.namespace]
    folder, name = segments[:-1], segments[-1]
    # An s3 key is the whole path; a file URL's root is the agent's archive folder, which the
    # operator does not know (the agent confines keys to it): the key is what follows it.
    in_folder = folder == expected if s3 else folder[-len(expected):] == expected
    if not in_folder or name not in {claim.checkpoint_id + s for s in _SUFFIXES}:
        raise refused
    return "/".join([*expected, name])
