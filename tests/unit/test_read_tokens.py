"""The operator's read-only API token per namespace (`ckpt.operator.read_tokens`): minted and
written on a namespace's first Checkpoint, renewed at half its lifetime, never for the
operator's own namespace; a failure costs the namespace's users only the API join."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging

import pytest

from ckpt.contract.checkpoints_api import ReaderToken
from ckpt.errors import Unavailable
from ckpt.operator.read_tokens import ReadTokens, secret_body

START = dt.datetime(2026, 12, 8, 12, 0, tzinfo=dt.UTC)


class FakeApi:
    def __init__(self) -> None:
        self.minted: list[tuple[str, int]] = []
        self.down = False

    async def mint_reader_token(self, namespace: str, expires_in: int) -> ReaderToken:
        await asyncio.sleep(0)  # another handler may run meanwhile
        if self.down:
            raise Unavailable("checkpoints API unreachable: ConnectError()")
        self.minted.append((namespace, expires_in))
        return ReaderToken(token=f"ckpt_{namespace}_{len(self.minted)}",
                           expires_at=START + dt.timedelta(seconds=expires_in))


class FakeSecrets:
    def __init__(self) -> None:
        self.written: dict[str, str] = {}

    async def write(self, namespace: str, token: ReaderToken) -> None:
        self.written[namespace] = token.token


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def parts() -> tuple[FakeApi, FakeSecrets, Clock, ReadTokens]:
    api, secrets, clock = FakeApi(), FakeSecrets(), Clock()
    tokens = ReadTokens(api, secrets, skip=frozenset({"ckpt-system"}),
                        lifetime=dt.timedelta(hours=24), clock=clock)
    return api, secrets, clock, tokens


async def test_minted_once_per_half_lifetime_and_never_for_the_operators_namespace(
    parts: tuple[FakeApi, FakeSecrets, Clock, ReadTokens],
) -> None:
    api, secrets, clock, tokens = parts
    # Many Checkpoints of one namespace handled at once: one token.
    await asyncio.gather(*(tokens.ensure("team-a") for _ in range(5)))
    await tokens.ensure("ckpt-system")
    assert api.minted == [("team-a", 86400)]
    assert secrets.written == {"team-a": "ckpt_team-a_1"}
    clock.now += dt.timedelta(hours=11, minutes=59)
    await tokens.ensure("team-a")
    assert len(api.minted) == 1
    clock.now += dt.timedelta(minutes=1)
    await tokens.ensure("team-a")
    assert secrets.written == {"team-a": "ckpt_team-a_2"}


async def test_a_failure_is_logged_and_retried_at_the_next_handling(
    parts: tuple[FakeApi, FakeSecrets, Clock, ReadTokens], caplog: pytest.LogCaptureFixture,
) -> None:
    api, secrets, _, tokens = parts
    api.down = True
    with caplog.at_level(logging.WARNING):
        await tokens.ensure_quietly("team-a")
    assert "could not renew team-a/ckpt-api-read-token" in caplog.text
    assert secrets.written == {}
    api.down = False
    await tokens.ensure_quietly("team-a")
    assert secrets.written == {"team-a": "ckpt_team-a_1"}


def test_the_secret_is_of_ckpts_type_with_one_key_and_its_expiry() -> None:
    token = ReaderToken(token="ckpt_x", expires_at=START)
    body = secret_body("team-a", token)
    assert body["type"] == "ckpt.dev/api-read-token"
    assert body["metadata"]["name"] == "ckpt-api-read-token"
    assert body["metadata"]["namespace"] == "team-a"
    assert body["metadata"]["annotations"] == {"ckpt.dev/expires-at": "2026-12-08T12:00:00Z"}
    assert body["data"] == {"token": base64.b64encode(b"ckpt_x").decode()}
    # The API answers naive UTC as well; the annotation is the same.
    naive = ReaderToken(token="ckpt_x", expires_at=START.replace(tzinfo=None))
    assert secret_body("team-a", naive)["metadata"]["annotations"] == body["metadata"][
        "annotations"
    ]
