"""A real S3 server (SeaweedFS on loopback) for the storage tests, and locations on it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ckpt.apis.storagelocation import Destination, LocationType
from harness.s3 import SeaweedS3


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    with server:
        yield server


@pytest.fixture
def bucket(s3: SeaweedS3) -> str:
    name = f"ckpt-{secrets.token_hex(4)}"
    s3.create_bucket(name)
    return name


MakeDest = Callable[..., Destination]


@pytest.fixture
def make_dest(s3: SeaweedS3, bucket: str) -> MakeDest:
    def make(**overrides: Any) -> Destination:
        fields: dict[str, Any] = {
            "location": "test-s3",
            "type": LocationType.s3,
            "bucket": bucket,
            "prefix": "archives",
            "endpoint": s3.endpoint,
            "region": s3.region,
            "path_style": True,
            "credentials": {
                "access_key_id": s3.access_key,
                "secret_access_key": s3.secret_key,
            },
        }
        fields.update(overrides)
        return Destination.model_validate(fields)

    return make


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path / "scratch"
