"""Every endpoint, transition and error case of the v2 checkpoints contract (README.md, "The
checkpoints API"), against a real server."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from api_support import Running

ZERO = "00000000-0000-0000-0000-000000000000"


def assert_api_error(response: httpx.Response, status: int, mentions: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"message", "code", "details"}
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    if mentions is not None:
        assert mentions in body["message"], body
    return body


def create(http: httpx.Client, **params: Any) -> str:
    response = http.post("/v2/checkpoints", params=params or None)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    UUID(response.text)  # a bare UUID: no quotes, no JSON
    assert response.text == response.text.strip() and '"' not in response.text
    return response.text


def get(http: httpx.Client, checkpoint_id: str) -> dict:
    response = http.get("/v2/checkpoints", params={"ids": checkpoint_id})
    assert response.status_code == 200
    (item,) = response.json()
    return item


def info(http: httpx.Client, checkpoint_id: str, **body: Any) -> httpx.Response:
    payload = {"gpu": "NVIDIA H100 80GB HBM3", "platform": "linux/amd64", **body}
    return http.put(f"/v2/checkpoints/info/{checkpoint_id}", json=payload)


def uploaded(http: httpx.Client, checkpoint_id: str, **body: Any) -> httpx.Response:
    return http.post(f"/v2/checkpoints/uploaded/{checkpoint_id}", json=body)


def deprecate(http: httpx.Client, checkpoint_id: str) -> httpx.Response:
    return http.patch(f"/v2/checkpoints/deprecate/{checkpoint_id}")


def test_create_then_list_shows_an_empty_initializing_checkpoint(http: httpx.Client) -> None:
    checkpoint_id = create(http)
    listed = http.get("/v2/checkpoints")
    assert listed.headers["content-type"] == "application/json"
    assert listed.json() == [
        {
            "id": checkpoint_id,
            "status": "initializing",
            "gpu": "",
            "platform": "",
            "checksum": None,
            "info": None,
            "name": None,
        }
    ]


def test_create_with_name(http: httpx.Client) -> None:
    checkpoint_id = create(http, name="nightly db")
    assert get(http, checkpoint_id)["name"] == "nightly db"


def test_full_lifecycle_to_ready(http: httpx.Client) -> None:
    checkpoint_id = create(http)
    details = {"node": "n1", "containers": ["app"], "sizes": {"total": 123}}
    response = info(http, checkpoint_id, info=details)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == checkpoint_id
    assert get(http, checkpoint_id)["status"] == "updated_info"

    response = uploaded(http, checkpoint_id, restore_path="/store/a.tar.zst", checksum="sha256:ab")
    assert (response.status_code, response.text) == (200, checkpoint_id)
    assert get(http, checkpoint_id) == {
        "id": checkpoint_id,
        "status": "ready",
        "gpu": "NVIDIA H100 80GB HBM3",
        "platform": "linux/amd64",
        "checksum": "sha256:ab",
        "info": details,
        "name": None,
    }

    response = deprecate(http, checkpoint_id)
    assert (response.status_code, response.text) == (200, checkpoint_id)
    assert response.headers["content-type"].startswith("text/plain")
    assert get(http, checkpoint_id)["status"] == "deprecated"


def test_uploaded_without_restore_path_is_only_possibly_uploaded(http: httpx.Client) -> None:
    checkpoint_id = create(http)
    assert info(http, checkpoint_id).status_code == 200
    assert uploaded(http, checkpoint_id, restore_path=None).status_code == 200
    assert get(http, checkpoint_id)["status"] == "possibly_uploaded"
    assert uploaded(http, checkpoint_id, restore_path="/store/b").status_code == 200
    assert get(http, checkpoint_id)["status"] == "ready"


# (steps that reach the state, action, expected status code, status afterwards)
_REACH = {
    "initializing": [],
    "updated_info": ["info"],
    "possibly_uploaded": ["info", "uploaded_null"],
    "ready": ["info", "uploaded"],
    "deprecated": ["info", "deprecate"],
}
_TRANSITIONS = [
    ("initializing", "info", 200, "updated_info"),
    ("updated_info", "info", 200, "updated_info"),
    ("possibly_uploaded", "info", 409, "possibly_uploaded"),
    ("ready", "info", 409, "ready"),
    ("deprecated", "info", 409, "deprecated"),
    ("initializing", "uploaded", 200, "ready"),
    ("updated_info", "uploaded", 200, "ready"),
    ("possibly_uploaded", "uploaded", 200, "ready"),
    ("ready", "uploaded", 200, "ready"),  # an exact repeat (a retried call) is accepted
    ("ready", "uploaded_other", 409, "ready"),
    ("ready", "uploaded_null", 409, "ready"),
    ("deprecated", "uploaded", 409, "deprecated"),
    ("deprecated", "uploaded_null", 409, "deprecated"),
    ("initializing", "uploaded_null", 200, "possibly_uploaded"),
    ("updated_info", "uploaded_null", 200, "possibly_uploaded"),
    ("possibly_uploaded", "uploaded_null", 200, "possibly_uploaded"),
    ("initializing", "deprecate", 200, "deprecated"),
    ("updated_info", "deprecate", 200, "deprecated"),
    ("possibly_uploaded", "deprecate", 200, "deprecated"),
    ("ready", "deprecate", 200, "deprecated"),
    ("deprecated", "deprecate", 200, "deprecated"),
]


def _act(http: httpx.Client, checkpoint_id: str, action: str) -> httpx.Response:
    if action == "info":
        return info(http, checkpoint_id)
    if action == "uploaded":
        return uploaded(http, checkpoint_id, restore_path="/store/x", checksum="sha256:1")
    if action == "uploaded_other":
        return uploaded(http, checkpoint_id, restore_path="/store/other", checksum="sha256:2")
    if action == "uploaded_null":
        return uploaded(http, checkpoint_id, restore_path=None)
    assert action == "deprecate"
    return deprecate(http, checkpoint_id)


@pytest.mark.parametrize(("start", "action", "code", "after"), _TRANSITIONS)
def test_status_transitions(
    http: httpx.Client, start: str, action: str, code: int, after: str
) -> None:
    checkpoint_id = create(http)
    for step in _REACH[start]:
        assert _act(http, checkpoint_id, step).status_code == 200
    assert get(http, checkpoint_id)["status"] == start
    response = _act(http, checkpoint_id, action)
    if code == 200:
        assert (response.status_code, response.text) == (200, checkpoint_id)
    else:
        body = assert_api_error(response, 409, mentions=start)
        assert body["code"] == "illegal_transition"
    assert get(http, checkpoint_id)["status"] == after


def test_refused_transition_changes_nothing(http: httpx.Client) -> None:
    checkpoint_id = create(http)
    assert info(http, checkpoint_id, info={"v": 1}).status_code == 200
    assert deprecate(http, checkpoint_id).status_code == 200
    assert info(http, checkpoint_id, gpu="other", info={"v": 2}).status_code == 409
    item = get(http, checkpoint_id)
    assert (item["gpu"], item["info"]) == ("NVIDIA H100 80GB HBM3", {"v": 1})


ENDPOINTS = [
    ("GET", "/v2/checkpoints", None),
    ("POST", "/v2/checkpoints", None),
    ("PATCH", f"/v2/checkpoints/deprecate/{ZERO}", None),
    ("PUT", f"/v2/checkpoints/info/{ZERO}", {"gpu": "g", "platform": "p"}),
    ("POST", f"/v2/checkpoints/uploaded/{ZERO}", {"restore_path": None}),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer ckpt_not-a-real-token", "ckpt_x"],
)
def test_every_endpoint_needs_a_valid_bearer_token(
    api: Running, method: str, path: str, body: Any, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=api.base_url) as anonymous:
        response = anonymous.request(method, path, json=body, headers=headers)
    assert_api_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_unauthenticated_bad_request_still_answers_401(api: Running) -> None:
    with httpx.Client(base_url=api.base_url) as anonymous:
        response = anonymous.put("/v2/checkpoints/info/not-a-uuid", content=b"{not json")
    assert_api_error(response, 401)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", f"/v2/checkpoints/deprecate/{ZERO}", None),
        ("PUT", f"/v2/checkpoints/info/{ZERO}", {"gpu": "g", "platform": "p"}),
        ("POST", f"/v2/checkpoints/uploaded/{ZERO}", {"restore_path": "/x"}),
    ],
)
def test_unknown_id_is_404(http: httpx.Client, method: str, path: str, body: Any) -> None:
    assert_api_error(http.request(method, path, json=body), 404, mentions=ZERO)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/v2/checkpoints/deprecate/{bad}", None),
        ("PUT", "/v2/checkpoints/info/{bad}", {"gpu": "g", "platform": "p"}),
        ("POST", "/v2/checkpoints/uploaded/{bad}", {"restore_path": "/x"}),
    ],
)
@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", ZERO[:-1] + "g"])
def test_invalid_uuid_in_path_is_400_naming_id(
    http: httpx.Client, method: str, path: str, body: Any, bad: str
) -> None:
    body_out = assert_api_error(http.request(method, path.format(bad=bad), json=body), 400, "id")
    assert body_out["code"] == "validation_error"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"platform": "linux/amd64"}, "gpu"),
        ({"gpu": "none"}, "platform"),
        ({"gpu": 7, "platform": "linux/amd64"}, "gpu"),
        ({"gpu": "none", "platform": ["linux"]}, "platform"),
        ({"gpu": None, "platform": "linux/amd64"}, "gpu"),
        ({"gpu": "none\x00", "platform": "linux/amd64"}, "gpu"),
        ({"gpu": "none", "platform": "linux/amd64", "info": float("nan")}, "info"),
    ],
)
def test_put_info_with_a_bad_field_is_422_naming_it(
    http: httpx.Client, payload: dict, field: str
) -> None:
    checkpoint_id = create(http)
    content = (
        httpx.Request("PUT", "http://x", json=payload).content
        if "info" not in payload
        else (b'{"gpu":"none","platform":"linux/amd64","info":NaN}')
    )
    response = http.put(
        f"/v2/checkpoints/info/{checkpoint_id}",
        content=content,
        headers={"content-type": "application/json"},
    )
    body = assert_api_error(response, 422, mentions=field)
    assert any(d["field"].endswith(field) for d in body["details"])
    assert get(http, checkpoint_id)["status"] == "initializing"


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("info", b""),
        ("info", b"{not json"),
        ("info", b"[]"),
        ("uploaded", b""),
        ("uploaded", b'{"restore_path": 5}'),
        ("uploaded", b'{"restore_path": "/x", "checksum": 5}'),
    ],
)
def test_bad_bodies_are_422(http: httpx.Client, path: str, content: bytes) -> None:
    checkpoint_id = create(http)
    response = http.request(
        "PUT" if path == "info" else "POST",
        f"/v2/checkpoints/{path}/{checkpoint_id}",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert_api_error(response, 422, mentions="body")


def test_list_by_ids(http: httpx.Client) -> None:
    a, b, c = create(http), create(http), create(http)
    assert [x["id"] for x in http.get("/v2/checkpoints", params={"ids": a}).json()] == [a]
    response = http.get("/v2/checkpoints", params={"ids": f"{c}, {a},{uuid4()}"})
    assert sorted(x["id"] for x in response.json()) == sorted([a, c])
    assert {x["id"] for x in http.get("/v2/checkpoints").json()} == {a, b, c}


@pytest.mark.parametrize("ids", ["nope", f"{ZERO},nope", ZERO + "0", "{" + ZERO])
def test_list_with_a_malformed_uuid_is_400_naming_ids(http: httpx.Client, ids: str) -> None:
    assert_api_error(http.get("/v2/checkpoints", params={"ids": ids}), 400, mentions="ids")


def test_list_paging_extension(http: httpx.Client) -> None:
    created = [create(http) for _ in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = http.get("/v2/checkpoints", params=params)
        assert response.status_code == 200
        seen += [x["id"] for x in response.json()]
        pages += 1
        cursor = response.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert seen == created
    assert pages == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": "x"}, "limit"), ({"cursor": "abc"}, "cursor")],
)
def test_list_bad_paging_parameters_are_400(http: httpx.Client, params: dict, field: str) -> None:
    assert_api_error(http.get("/v2/checkpoints", params=params), 400, mentions=field)


def test_idempotency_key_returns_the_same_id(api: Running) -> None:
    with api.client() as http:
        first = http.post("/v2/checkpoints", headers={"Idempotency-Key": "uid-1"}).text
        again = http.post("/v2/checkpoints", headers={"Idempotency-Key": "uid-1"}).text
        other = http.post("/v2/checkpoints", headers={"Idempotency-Key": "uid-2"}).text
        assert first == again != other
        assert len(http.get("/v2/checkpoints").json()) == 2
    with api.client() as another_tenant:
        theirs = another_tenant.post("/v2/checkpoints", headers={"Idempotency-Key": "uid-1"}).text
    assert theirs != first


async def test_idempotency_key_holds_under_concurrent_requests(api: Running) -> None:
    import asyncio

    token = api.backend.token()
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "same-for-all"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=20) as http:
        responses = await asyncio.gather(*(http.post("/v2/checkpoints") for _ in range(24)))
        assert {r.status_code for r in responses} == {200}
        assert len({r.text for r in responses}) == 1
        assert len((await http.get("/v2/checkpoints")).json()) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v2/checkpoints"), ("GET", f"/v2/checkpoints/info/{ZERO}")],
)
def test_wrong_method_is_405_api_error(http: httpx.Client, method: str, path: str) -> None:
    assert_api_error(http.request(method, path), 405)


def test_unknown_path_is_404_api_error(http: httpx.Client) -> None:
    assert_api_error(http.get("/v2/checkpoints/nothing/here/at/all"), 404)
    assert_api_error(http.get("/nothing"), 404)


def test_healthz_needs_no_token(api: Running) -> None:
    response = httpx.get(f"{api.base_url}/healthz")
    assert (response.status_code, response.text) == (200, "ok")


def test_metrics_count_requests_by_route_template_and_status(api: Running) -> None:
    with api.client() as http:
        checkpoint_id = create(http)
        info(http, checkpoint_id)
        http.get("/v2/checkpoints", params={"ids": "bad"})
    httpx.get(f"{api.base_url}/v2/checkpoints")  # 401, answered before routing
    text = httpx.get(f"{api.base_url}/metrics").text
    assert (
        'ckpt_api_requests_total{method="PUT",route="/v2/checkpoints/info/{id}",status="200"}'
        in text
    )
    assert 'ckpt_api_requests_total{method="GET",route="/v2/checkpoints",status="400"}' in text
    assert 'ckpt_api_requests_total{method="GET",route="/v2/checkpoints",status="401"}' in text
    assert (
        'ckpt_api_request_duration_seconds_bucket{le="0.005",method="POST",route="/v2/checkpoints"}'
        in text
    )
    assert checkpoint_id not in text
