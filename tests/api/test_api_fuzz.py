"""A bounded schemathesis run against the server's own /openapi.json: no 5xx, no response
that its schema does not describe (status, media type, body, headers). Every generated case
with a JSON body is sent a second time gzip-encoded, as Kiota-generated clients send bodies.

Each test checks the server's metrics and log for its own requests, so any one of them can
run alone or in any order."""

from __future__ import annotations

import gzip
import json
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

pytestmark = pytest.mark.e2e  # a real PostgreSQL

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
    # One tenant sends everything as fast as it can: rate limits would only cut coverage.
    unlimited = {
        "CKPT_API_RATE_LIMIT_PER_SECOND": "0",
        "CKPT_API_UNKNOWN_TOKEN_LOOKUPS_PER_SECOND": "0",
    }
    with ApiServer(backend.url, tmp / "server.log", env=unlimited) as server:
        yield Running(backend, server), backend.token("fuzz")
    backend.db.dispose()


# Examples per operation and mode: 7 x (60 + 40) stays well under a minute on 2 cores.
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 60, schemathesis.GenerationMode.NEGATIVE: 40}


def _requests_handled(base_url: str) -> tuple[float, str]:
    metrics = httpx.get(f"{base_url}/metrics").text
    handled = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ckpt_api_requests_total{")
    )
    return handled, metrics


def _send_gzipped(case: schemathesis.Case, base_url: str, token: str) -> bool:
    """The case again with its JSON body gzip-encoded; the same checks apply to the answer.
    False when the case has no JSON body."""
    kwargs = case.as_transport_kwargs(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}
    )
    if "json" not in kwargs:
        return False
    kwargs["data"] = gzip.compress(json.dumps(kwargs.pop("json")).encode())
    kwargs["headers"] = {
        **kwargs["headers"],
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    response = httpx.request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=kwargs["headers"],
        cookies=kwargs.get("cookies"),
        content=kwargs["data"],
        timeout=10,
    )
    case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)
    return True


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_api_conforms_to_its_openapi(
    fuzz_target: tuple[Running, str], mode: schemathesis.GenerationMode
) -> None:
    running, token = fuzz_target
    handled_before, _ = _requests_handled(running.base_url)
    log_path = Path(running.server.log_path)
    log_before = log_path.stat().st_size
    schema = schemathesis.openapi.from_url(f"{running.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7

    budget = 0
    gzipped = 0
    for operation in operations:
        raw = operation.definition.raw
        if mode is schemathesis.GenerationMode.NEGATIVE and not (
            raw.get("parameters") or raw.get("requestBody")
        ):
            continue  # nothing to make invalid (healthz, metrics)
        budget += EXAMPLES[mode]

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
            nonlocal gzipped
            gzipped += _send_gzipped(case, running.base_url, token)

        call()

    # Both body operations (info, uploaded) had their cases sent gzip-encoded too.
    assert gzipped >= EXAMPLES[mode], gzipped
    handled_after, metrics = _requests_handled(running.base_url)
    # hypothesis may stop early when it has exhausted a small input space; most operations
    # take their whole budget.
    assert handled_after - handled_before >= budget // 2, "the fuzz run made too few requests"
    assert 'status="5' not in metrics
    with log_path.open("rb") as log:
        log.seek(log_before)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written and "unhandled error" not in written
