"""A bounded schemathesis run against the server's own /openapi.json: no 5xx, no response
that its schema does not describe (status, media type, body, headers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from api_support import Backend, Running, make_backend
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from harness.postgres import ApiServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Not `negative_data_rejection`: it counts an ignored unknown query parameter as a failure,
# and ignoring those is ordinary HTTP behaviour that the contract does not forbid.


@pytest.fixture(scope="module")
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Running, str]]:
    # PostgreSQL is the stricter store (NUL bytes, encodings); fuzz against it.
    tmp = tmp_path_factory.mktemp("fuzz")
    backend: Backend = make_backend("postgresql", tmp, request)
    with ApiServer(backend.url, tmp / "server.log") as server:
        yield Running(backend, server), backend.token("fuzz")
    backend.db.dispose()


# Examples per operation and mode: 7 x (60 + 40) stays well under a minute on 2 cores.
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 60, schemathesis.GenerationMode.NEGATIVE: 40}


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_api_conforms_to_its_openapi(
    fuzz_target: tuple[Running, str], mode: schemathesis.GenerationMode
) -> None:
    running, token = fuzz_target
    schema = schemathesis.openapi.from_url(f"{running.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7

    for operation in operations:
        raw = operation.definition.raw
        if mode is schemathesis.GenerationMode.NEGATIVE and not (
            raw.get("parameters") or raw.get("requestBody")
        ):
            continue  # nothing to make invalid (healthz, metrics)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES[mode],
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=running.base_url,
                headers={"Authorization": f"Bearer {token}"},
                checks=CHECKS,
                timeout=10,
            )

        call()


def test_fuzz_server_logged_no_unhandled_error(fuzz_target: tuple[Running, str]) -> None:
    metrics = httpx.get(f"{fuzz_target[0].base_url}/metrics").text
    handled = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ckpt_api_requests_total{")
    )
    assert handled >= 500, "the fuzz run made fewer requests than its budget says"
    assert 'status="5' not in metrics
    log = Path(fuzz_target[0].server.log_path).read_text()
    assert "Traceback" not in log and "unhandled error" not in log
