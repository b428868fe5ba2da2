"""The checkpoint status machine of the contract, as pure functions."""

from __future__ import annotations

from ckpt.contract.checkpoints_api import CheckpointStatus as S

_INFO_FROM = frozenset({S.initializing, S.updated_info})
# `ready` is absent on purpose: a ready checkpoint only accepts an exact repeat (a retried
# call), so a restorable archive can never be silently replaced or downgraded.
_UPLOADED_FROM = frozenset({S.initializing, S.updated_info, S.possibly_uploaded})


class IllegalTransition(Exception):
    def __init__(self, current: S, action: str) -> None:
        super().__init__(f"cannot {action} a checkpoint in status {current.value}")
        self.current = current
        self.action = action


def after_info(current: S) -> S:
    if current not in _INFO_FROM:
        raise IllegalTransition(current, "put info on")
    return S.updated_info


def after_uploaded(current: S, restore_path: str | None, repeats_stored_upload: bool) -> S:
    """`repeats_stored_upload`: the request carries exactly the stored path and checksum."""
    if current is S.ready and repeats_stored_upload:
        return S.ready
    if current not in _UPLOADED_FROM:
        raise IllegalTransition(current, "mark uploaded")
    return S.ready if restore_path is not None else S.possibly_uploaded
