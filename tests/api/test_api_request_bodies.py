"""Encoded and hostile request bodies: gzip bombs, unknown codings, corrupt streams, oversize
and over-deep bodies. Each is refused before the route runs, so nothing is written."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import Running

from ckpt.api.body import BodyDecoder, BodyRefused, json_too_deep
from harness.postgres import ApiServer

LIMIT = 1024 * 1024  # the default CKPT_API_MAX_BODY_BYTES


def _gzip_zeros(size: int) -> bytes:
    """gzip of `size` zero bytes, made in 1 MiB steps so the zeros are never all in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = []
    left = size
    while left:
        step = min(left, len(block))
        parts.append(compressor.compress(block[:step]))
        left -= step
    parts.append(compressor.flush())
    return b"".join(parts)


# ---- the decoder and the depth scan, in process ----


def test_decoder_refuses_a_bomb_after_at_most_the_limit() -> None:
    bomb = _gzip_zeros(10 * 1024 * 1024)
    assert len(bomb) < 20 * 1024
    decoder = BodyDecoder(["gzip"], limit=1000)
    with pytest.raises(BodyRefused) as refused:
        decoder.feed(bomb)
    assert refused.value.status == 413
    assert decoder.size == 0  # nothing was handed on


def test_decoder_undoes_codings_in_reverse_order_and_streams() -> None:
    body = json.dumps({"gpu": "g", "platform": "p", "info": list(range(1000))}).encode()
    twice = gzip.compress(zlib.compress(body))  # deflate applied first, then gzip
    decoder = BodyDecoder(["deflate", "gzip"], limit=len(body))
    out = b"".join(decoder.feed(twice[i : i + 7]) for i in range(0, len(twice), 7))
    decoder.finish()
    assert out == body


def test_decoder_reads_every_member_of_a_multi_member_gzip() -> None:
    decoder = BodyDecoder(["gzip"], limit=100)
    out = decoder.feed(gzip.compress(b'{"a":') + gzip.compress(b"1}"))
    decoder.finish()
    assert out == b'{"a":1}'


@pytest.mark.parametrize(
    ("coding", "data", "why"),
    [
        ("gzip", b"not gzip at all", "incorrect header check"),
        # mtime=0: the same bytes in every process (pytest -n workers compare test ids).
        ("gzip", gzip.compress(b'{"a": 1}', mtime=0)[:-6], "truncated"),
        ("deflate", zlib.compress(b"{}") + b"junk", "after the end"),
    ],
    ids=["gzip-not-gzip", "gzip-truncated", "deflate-junk-after-the-end"],
)
def test_decoder_corrupt_streams_are_400(coding: str, data: bytes, why: str) -> None:
    decoder = BodyDecoder([coding], limit=1000)
    with pytest.raises(BodyRefused) as refused:
        decoder.feed(data)
        decoder.finish()
    assert refused.value.status == 400
    assert coding in refused.value.message and why in refused.value.message


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'[[1], [2, [3]], {"a": {}}]', 3),
        # Brackets, quotes and backslashes inside strings do not count.
        (b'{"a": "[[[[[[[[", "b": "\\"[[[[", "c": "\\\\", "d": ["]]]"]}', 2),
        (b"[" * 500 + b"]" * 500, 500),
    ],
)
def test_json_too_deep_counts_levels_outside_strings(text: bytes, depth: int) -> None:
    assert json.loads(text) is not None or depth == 0
    assert not json_too_deep(text, depth)
    assert json_too_deep(text, depth - 1) == (depth > 0)


def test_json_too_deep_leaves_malformed_text_to_the_parser() -> None:
    assert not json_too_deep(b"]]]]]][[[[[[", 2)


# ---- against a real server process ----


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    """A server of its own, so that its memory is this module's requests' alone."""
    from ckpt.api import migrate
    from ckpt.api.db import Database
    from ckpt.api.tokens import create_token

    tmp = tmp_path_factory.mktemp("bodies")
    url = f"sqlite:///{tmp / 'api.db'}"
    db = Database(url)
    migrate.upgrade(db.engine)
    token = create_token(db, "bodies")
    db.dispose()
    with ApiServer(url, tmp / "server.log") as server:
        yield server, token


def _client(server: ApiServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _gzip_headers(coding: str = "gzip") -> dict[str, str]:
    return {"Content-Type": "application/json", "Content-Encoding": coding}


# The memory of a server process of its own: e2e.
@pytest.mark.e2e
def test_gzip_bombs_are_413_with_the_server_memory_flat(
    sqlite_server: tuple[ApiServer, str],
) -> None:
    server, token = sqlite_server
    ten_mb = _gzip_zeros(10 * 1024 * 1024)  # about 10 KB on the wire
    # 1 GiB of zeros: 1024 gzip members of 1 MiB each (a valid gzip stream, RFC 1952 2.2),
    # gzipped again: a few KB that would inflate a thousandfold twice over.
    one_gib_twice = gzip.compress(_gzip_zeros(1024 * 1024) * 1024)
    assert len(ten_mb) < 20_000 and len(one_gib_twice) < 20_000
    with _client(server, token) as http:
        checkpoint_id = http.post("/v2/checkpoints").text
        url = f"/v2/checkpoints/info/{checkpoint_id}"
        # Warm up: the first requests import and allocate what every later one reuses.
        for _ in range(3):
            ok = http.put(
                url, content=gzip.compress(b'{"gpu":"g","platform":"p"}'), headers=_gzip_headers()
            )
            assert ok.status_code == 200
        http.patch(f"/v2/checkpoints/deprecate/{checkpoint_id}")
        target = http.post("/v2/checkpoints").text
        url = f"/v2/checkpoints/info/{target}"
        before = _rss_kib(server.pid)
        for _ in range(10):
            for content, coding in [(ten_mb, "gzip"), (one_gib_twice, "gzip, gzip")]:
                response = http.put(url, content=content, headers=_gzip_headers(coding))
                assert response.status_code == 413, response.text
                assert response.json()["code"] == "payload_too_large"
        after = _rss_kib(server.pid)
        # Decoding stops at the limit (1 MiB) plus one byte: twenty bombs may leave a few
        # buffers of that size behind, never the 10 MB or 1 GiB they would inflate to.
        assert after - before < 16 * 1024, (before, after)
        # Nothing was written.
        (listed,) = http.get("/v2/checkpoints", params={"ids": target}).json()
        assert (listed["status"], listed["gpu"]) == ("initializing", "")


def test_an_unknown_coding_is_415_naming_it_and_nothing_is_written(api: Running) -> None:
    with api.client() as http:
        checkpoint_id = http.post("/v2/checkpoints").text
        for coding in ("br", "zstd", "gzip, compress"):
            response = http.put(
                f"/v2/checkpoints/info/{checkpoint_id}",
                content=b'{"gpu":"g","platform":"p"}',
                headers=_gzip_headers(coding),
            )
            assert response.status_code == 415, response.text
            body = response.json()
            assert body["code"] == "unsupported_content_encoding"
            named = coding.split(", ")[-1]
            assert named in body["message"] and body["details"]["content_encoding"] == named
        # Kiota retries uncompressed after a 415: that must succeed.
        retried = http.put(
            f"/v2/checkpoints/info/{checkpoint_id}",
            json={"gpu": "g", "platform": "p"},
        )
        assert retried.status_code == 200


def test_corrupt_gzip_is_400_with_a_clear_message_and_nothing_is_written(api: Running) -> None:
    with api.client() as http:
        checkpoint_id = http.post("/v2/checkpoints").text
        good = gzip.compress(b'{"restore_path": "/r"}')
        for content in (b"\x1f\x8b\x08 definitely not deflate", good[:-4], good[: len(good) // 2]):
            response = http.post(
                f"/v2/checkpoints/uploaded/{checkpoint_id}",
                content=content,
                headers=_gzip_headers(),
            )
            assert response.status_code == 400, response.text
            body = response.json()
            assert body["code"] == "bad_content_encoding"
            assert body["message"].startswith("request body is not valid gzip data")
        (listed,) = http.get("/v2/checkpoints", params={"ids": checkpoint_id}).json()
        assert listed["status"] == "initializing"


@pytest.mark.e2e
def test_a_10_mb_body_is_413_declared_or_streamed(sqlite_server: tuple[ApiServer, str]) -> None:
    server, token = sqlite_server
    body = b'{"gpu":"g","platform":"p","info":"' + b"x" * (10 * 1024 * 1024) + b'"}'
    with _client(server, token) as http:
        checkpoint_id = http.post("/v2/checkpoints").text
        url = f"/v2/checkpoints/info/{checkpoint_id}"
        before = _rss_kib(server.pid)
        declared = http.put(url, content=body, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413, declared.text

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            for i in range(0, len(body), 64 * 1024):
                yield body[i : i + 64 * 1024]

        streamed = http.put(url, content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        assert _rss_kib(server.pid) - before < 16 * 1024
        (listed,) = http.get("/v2/checkpoints", params={"ids": checkpoint_id}).json()
        assert listed["status"] == "initializing"


def test_unauthenticated_bodies_are_never_read(api: Running) -> None:
    with httpx.Client(base_url=api.base_url, timeout=30) as http:
        response = http.put(
            "/v2/checkpoints/info/00000000-0000-0000-0000-000000000000",
            content=b"\x1f\x8b garbage that would be a 400 if it were read",
            headers={**_gzip_headers(), "Authorization": "Bearer nope"},
        )
    assert response.status_code == 401
