"""`ckpt list` and `kubectl ckpt ls` without a token: each namespace's read-only token of the
checkpoints API, from the Secret the operator keeps there, joins that namespace's records only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client
from typer.testing import CliRunner

from ckpt.cli import app
from ckpt.contract import checkpoints_client
from ckpt.contract.checkpoints_api import (
    READ_TOKEN_SECRET,
    READ_TOKEN_SECRET_TYPE,
    Checkpoint,
)
from ckpt.user import resources
from ckpt.user.resources import Checkpoints, UserError

CREATED = "2026-01-01T00:00:00Z"


def _response(body: dict[str, Any]) -> urllib3.HTTPResponse:
    """What a `_preload_content=False` call returns: the raw HTTP response."""
    return urllib3.HTTPResponse(body=json.dumps(body).encode(), status=200)


class FakeCore:
    """CoreV1Api's Secret read: `secrets` by namespace, an ApiException status otherwise."""

    def __init__(self, secrets: dict[str, dict[str, Any] | int]) -> None:
        self.secrets = secrets
        self.read: list[tuple[str, str]] = []

    def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> urllib3.HTTPResponse:
        self.read.append((namespace, name))
        found = self.secrets.get(namespace, 404)
        if isinstance(found, int):
            raise client.ApiException(status=found, reason="Forbidden" if found == 403 else "")
        return _response(found)


def _secret(token: str, kind: str = READ_TOKEN_SECRET_TYPE) -> dict[str, Any]:
    return {"type": kind, "data": {"token": base64.b64encode(token.encode()).decode()}}


def _checkpoints(core: FakeCore, items: list[dict[str, Any]] | None = None) -> Checkpoints:
    checkpoints = Checkpoints.__new__(Checkpoints)
    checkpoints.core = core  # type: ignore[assignment]
    checkpoints.list = lambda namespace: items or []  # type: ignore[method-assign]
    return checkpoints


def test_the_namespace_token_comes_from_the_operators_secret_only() -> None:
    core = FakeCore({
        "team-a": _secret("ckpt_team_a\n"),
        "planted": _secret("ckpt_someone_elses", kind="Opaque"),
        "hidden": 403,
    })
    checkpoints = _checkpoints(core)
    assert checkpoints.api_token("team-a") == "ckpt_team_a"
    assert checkpoints.api_token("nothing-yet") is None
    with pytest.raises(UserError, match=r"not of type ckpt\.dev/api-read-token"):
        checkpoints.api_token("planted")
    with pytest.raises(UserError, match="your user lacks permission"):
        checkpoints.api_token("hidden")
    assert {name for _, name in core.read} == {READ_TOKEN_SECRET}


def _item(namespace: str, name: str, checkpoint_id: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "metadata": {"namespace": namespace, "name": name, "creationTimestamp": CREATED},
        "spec": {"podName": "web"},
    }
    if checkpoint_id:
        item["status"] = {"phase": "Ready", "checkpointId": checkpoint_id, "apiStatus": "ready"}
    return item


IDS = {"team-a": "7f0c0000-0000-4000-8000-00000000000a",
       "team-b": "7f0c0000-0000-4000-8000-00000000000b",
       "team-c": "7f0c0000-0000-4000-8000-00000000000c"}


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, list[str]]]]:
    """The API calls `ckpt list -A` makes: (token, ids); each token sees only its records."""
    calls: list[tuple[str, list[str]]] = []

    class FakeApi:
        def __init__(self, url: str, token: str, **_: Any) -> None:
            self.token = token

        def __enter__(self) -> FakeApi:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def list(self, ids: list[str]) -> list[Checkpoint]:
            calls.append((self.token, list(ids)))
            mine = [i for i in ids if self.token in ("explicit", f"ckpt_{_namespace_of(i)}")]
            return [Checkpoint(id=i, status="deprecated", gpu="none", platform="p")
                    for i in mine]

    items = [_item(ns, f"{ns}-1", checkpoint_id) for ns, checkpoint_id in IDS.items()]
    items.append(_item("team-a", "not-registered", None))
    core = FakeCore({"team-a": _secret("ckpt_team-a"), "team-b": _secret("ckpt_team-b"),
                     "team-c": 403})
    monkeypatch.setattr(checkpoints_client, "SyncCheckpointsClient", FakeApi)
    monkeypatch.setattr(resources, "api_client", lambda *a: object())
    monkeypatch.setattr(resources, "Checkpoints", lambda api: _checkpoints(core, items))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("CKPT_API_URL", "https://api.example")
    monkeypatch.delenv("CKPT_API_TOKEN", raising=False)
    yield calls


def _namespace_of(checkpoint_id: str) -> str:
    return next(ns for ns, i in IDS.items() if i == checkpoint_id)


def _api_column(output: str) -> dict[str, str]:
    """NAME -> API of the registered rows (empty columns vanish from a split: API is the one
    before AGE)."""
    rows = [line.split() for line in output.splitlines()[1:]]
    return {row[1]: row[-2] for row in rows if row[1] != "not-registered"}


def test_list_joins_each_namespace_with_its_own_token(asked: list[tuple[str, list[str]]]) -> None:
    result = CliRunner().invoke(app, ["list", "-A"])
    assert result.exit_code == 0, result.output
    # One call per namespace with a Secret, with that namespace's ids only.
    assert asked == [("ckpt_team-a", [IDS["team-a"]]), ("ckpt_team-b", [IDS["team-b"]])]
    # Joined: the API's status; team-c (Secret unreadable) keeps the operator's last write.
    assert _api_column(result.stdout) == {
        "team-a-1": "deprecated", "team-b-1": "deprecated", "team-c-1": "ready",
    }
    assert "checkpoints API not joined" in result.stderr and "team-c" in result.stderr


def test_a_given_token_joins_every_namespace_as_before(
    asked: list[tuple[str, list[str]]],
) -> None:
    result = CliRunner().invoke(app, ["list", "-A", "--api-token", "explicit"])
    assert result.exit_code == 0, result.output
    assert asked == [("explicit", list(IDS.values()))]
