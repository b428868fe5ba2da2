"""The operator's requests carry a location's credentials to the agent in clear (pydantic
masks SecretStr as '**********' in JSON, and an agent given that answers "access key unknown"),
while every other serialization keeps them masked. Pure logic: the agent is an httpx mock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from ckpt.apis.storagelocation import Destination, LocationType, S3Credentials
from ckpt.contract.agent import CheckpointRequest, ContainerTarget
from ckpt.contract.agent_client import AgentClient

AGE_KEY = "AGE-SECRET-KEY-1" + "Q" * 58


def _destination() -> Destination:
    return Destination(
        location="shared", type=LocationType.s3, bucket="checkpoints",
        endpoint="http://s3.example:9000", region="us-east-1", path_style=True,
        credentials=S3Credentials(
            access_key_id=SecretStr("AKID"), secret_access_key=SecretStr("SECRET"),
            session_token=SecretStr("TOKEN"),
        ),
        identities=[SecretStr(AGE_KEY)],
    )


def _request() -> CheckpointRequest:
    return CheckpointRequest(
        checkpoint_id="c1", namespace="demo", pod="counter",
        containers=[ContainerTarget(name="counter", container_id="abc")],
        destination=_destination(),
    )


class _Agent:
    ref = "ckpt-system/ckpt-agent-x"

    def base_url(self, scheme: str = "http") -> str:
        return f"{scheme}://agent.test:8443"


def test_plain_serialization_keeps_secrets_masked() -> None:
    dumped = _destination().model_dump(mode="json")
    assert dumped["credentials"] == {
        "access_key_id": "**********", "secret_access_key": "**********",
        "session_token": "**********",
    }
    assert dumped["identities"] == ["**********"]
    assert "SECRET" not in _request().model_dump_json()


def test_the_agent_receives_the_credentials_in_clear(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("operator-token\n")
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(500, json={"message": "stop here"})

    async def call() -> None:
        client = AgentClient(token, scheme="https")
        client._http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        try:
            await client.start_checkpoint(_Agent(), _request())
        except Exception as exc:  # the mock answers 500 once the body is seen
            assert "stop here" in str(exc)
        finally:
            await client.aclose()

    asyncio.run(call())
    (body,) = seen
    assert body["destination"]["credentials"] == {
        "access_key_id": "AKID", "secret_access_key": "SECRET", "session_token": "TOKEN",
    }
    assert body["destination"]["identities"] == [AGE_KEY]
    # What the agent parses is the same destination.
    parsed = CheckpointRequest.model_validate(body).destination
    assert parsed is not None and parsed.credentials is not None
    assert parsed.credentials.secret_access_key.get_secret_value() == "SECRET"
