"""What a client generated from Cedana's OpenAPI with Microsoft Kiota sends, byte for byte.

Kiota's default HTTP pipeline (Cedana's Go SDK uses it) gzips every request body and labels
it `Content-Encoding: gzip`; it asks `Accept: text/plain;q=0.9` where the operation answers
text and `application/json` for the list; optional fields left unset are omitted, never sent
as null; a query array is joined with commas, percent-encoded (`%2C`) by its URI template.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
from api_support import Running

KIOTA_HEADERS = {"User-Agent": "kiota-go/1.0"}
TEXT = {"Accept": "text/plain;q=0.9"}
JSON_LIST = {"Accept": "application/json"}


def _gzip_json(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    content = gzip.compress(json.dumps(body, separators=(",", ":")).encode())
    return content, {
        **TEXT,
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }


def _kiota(api: Running) -> httpx.Client:
    client = api.client()
    client.headers.update(KIOTA_HEADERS)
    return client


def _create(http: httpx.Client) -> str:
    response = http.post("/v2/checkpoints", headers=TEXT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def _list_ids(http: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    # Built by hand so that the commas go out exactly as Kiota encodes them.
    base = str(http.base_url).rstrip("/")
    url = httpx.URL(f"{base}/v2/checkpoints?ids={'%2C'.join(ids)}")
    assert url.raw_path.count(b"%2C") == len(ids) - 1
    response = http.get(url, headers=JSON_LIST)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_kiota_lifecycle_create_info_uploaded_list_deprecate(api: Running) -> None:
    with _kiota(api) as http:
        with_path, without_path = _create(http), _create(http)

        for checkpoint_id in (with_path, without_path):
            # `info` is optional: Kiota leaves it out when unset.
            content, headers = _gzip_json({"gpu": "none", "platform": "linux/amd64"})
            put = http.put(
                f"/v2/checkpoints/info/{checkpoint_id}", content=content, headers=headers
            )
            assert (put.status_code, put.text) == (200, checkpoint_id)

        content, headers = _gzip_json({"restore_path": "s3://bucket/a.tar.zst", "checksum": "c"})
        done = http.post(f"/v2/checkpoints/uploaded/{with_path}", content=content, headers=headers)
        assert (done.status_code, done.text) == (200, with_path)
        # `restore_path` unset: Kiota sends an empty object, which means null.
        content, headers = _gzip_json({})
        done = http.post(
            f"/v2/checkpoints/uploaded/{without_path}", content=content, headers=headers
        )
        assert (done.status_code, done.text) == (200, without_path)

        listed = {c["id"]: c for c in _list_ids(http, [with_path, without_path])}
        assert listed[with_path]["status"] == "ready"
        assert listed[with_path]["checksum"] == "c"
        assert listed[without_path]["status"] == "possibly_uploaded"
        assert listed[without_path]["gpu"] == "none"
        assert listed[without_path]["info"] is None

        for checkpoint_id in (with_path, without_path):
            gone = http.patch(f"/v2/checkpoints/deprecate/{checkpoint_id}", headers=TEXT)
            assert (gone.status_code, gone.text) == (200, checkpoint_id)
        statuses = {c["status"] for c in _list_ids(http, [with_path, without_path])}
        assert statuses == {"deprecated"}


def test_kiota_info_with_a_gzipped_info_document(api: Running) -> None:
    with _kiota(api) as http:
        checkpoint_id = _create(http)
        info = {"node": "n1", "containers": [{"name": "app", "sizes": [1, 2, 3]}]}
        content, headers = _gzip_json(
            {"gpu": "NVIDIA H100", "platform": "linux/amd64", "info": info}
        )
        put = http.put(f"/v2/checkpoints/info/{checkpoint_id}", content=content, headers=headers)
        assert put.status_code == 200, put.text
        (listed,) = _list_ids(http, [checkpoint_id])
        assert (listed["status"], listed["gpu"], listed["info"]) == (
            "updated_info",
            "NVIDIA H100",
            info,
        )


def test_deflate_and_identity_bodies_are_accepted_too(api: Running) -> None:
    import zlib

    with _kiota(api) as http:
        first, second, third = _create(http), _create(http), _create(http)
        body = json.dumps({"gpu": "g", "platform": "p"}).encode()
        for checkpoint_id, coding, content in [
            (first, "deflate", zlib.compress(body)),  # zlib format, as RFC 9110 defines deflate
            (second, "deflate", zlib.compress(body, wbits=-15)),  # raw deflate, as some send it
            (third, "identity", body),
        ]:
            response = http.put(
                f"/v2/checkpoints/info/{checkpoint_id}",
                content=content,
                headers={"Content-Type": "application/json", "Content-Encoding": coding},
            )
            assert response.status_code == 200, (coding, response.text)
        assert {c["status"] for c in _list_ids(http, [first, second, third])} == {"updated_info"}


def test_a_gzipped_body_with_an_invalid_field_is_a_422_naming_it(api: Running) -> None:
    with _kiota(api) as http:
        checkpoint_id = _create(http)
        content, headers = _gzip_json({"platform": "linux/amd64"})
        response = http.put(
            f"/v2/checkpoints/info/{checkpoint_id}", content=content, headers=headers
        )
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "validation_error" and "body.gpu" in body["message"]


def test_large_lists_are_gzipped_for_clients_that_accept_it(api: Running) -> None:
    with _kiota(api) as http:
        ids = [_create(http) for _ in range(30)]
        # httpx asks for gzip by default and decodes transparently.
        big = http.get("/v2/checkpoints", headers={**JSON_LIST, "Accept-Encoding": "gzip"})
        assert big.headers["content-encoding"] == "gzip"
        assert big.headers["vary"] == "Accept-Encoding"
        assert [c["id"] for c in big.json()] == ids
        plain = http.get("/v2/checkpoints", headers={**JSON_LIST, "Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.json() == big.json()
        refused = http.get("/v2/checkpoints", headers={**JSON_LIST, "Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
        # A small list is not worth compressing.
        small = http.get(
            "/v2/checkpoints", params={"ids": ids[0]}, headers={"Accept-Encoding": "gzip"}
        )
        assert "content-encoding" not in small.headers
        assert [c["id"] for c in small.json()] == ids[:1]


def test_every_error_code_is_a_string(api: Running) -> None:
    """Typed clients parse `ApiError.code` as a string only: never an int, on any error."""
    missing = "00000000-0000-0000-0000-000000000000"
    with _kiota(api) as http:
        deprecated = _create(http)
        http.patch(f"/v2/checkpoints/deprecate/{deprecated}")
        errors = [
            http.get("/v2/checkpoints", headers={"Authorization": "Bearer wrong"}),  # 401
            http.patch(f"/v2/checkpoints/deprecate/{missing}"),  # 404
            http.put(f"/v2/checkpoints/info/{deprecated}", json={"gpu": "g", "platform": "p"}),
            http.put(f"/v2/checkpoints/info/{deprecated}", json={"gpu": 1}),  # 422
            http.get("/v2/checkpoints", params={"ids": "nope"}),  # 400
            http.delete("/v2/checkpoints"),  # 405
            http.get("/v2/nothing-here"),  # 404 without a route
            http.put(
                f"/v2/checkpoints/info/{deprecated}",
                content=b"{}",
                headers={"Content-Type": "application/json", "Content-Encoding": "br"},
            ),  # 415
        ]
    assert sorted({e.status_code for e in errors}) == [400, 401, 404, 405, 409, 415, 422]
    for error in errors:
        body = error.json()
        assert isinstance(body["code"], str) and body["code"], (error.status_code, body)
    schema = httpx.get(f"{api.base_url}/openapi.json").json()
    code = schema["components"]["schemas"]["ApiError"]["properties"]["code"]
    assert {t.get("type") for t in code["anyOf"]} == {"string", "null"}
