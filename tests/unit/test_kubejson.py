"""ckpt.kubejson: the apiserver's JSON from the official client, checked at the boundary
(a raw response of a _preload_content=False call, a custom object annotated as `object`)."""

from __future__ import annotations

import pytest
import urllib3
from kubernetes import client

from ckpt.kubejson import json_object, response_json


def _response(body: bytes) -> urllib3.HTTPResponse:
    return urllib3.HTTPResponse(body=body, status=200, preload_content=True)


def test_raw_response_body_keeps_the_apiservers_keys() -> None:
    pod = response_json(_response(b'{"metadata": {"name": "p", "creationTimestamp": "x"}}'))
    assert pod == {"metadata": {"name": "p", "creationTimestamp": "x"}}


def test_a_model_or_a_non_object_body_is_refused() -> None:
    # What the call returns when _preload_content=False was forgotten: the client's model.
    with pytest.raises(TypeError, match="raw HTTP response"):
        response_json(client.V1Pod(metadata=client.V1ObjectMeta(name="p")))
    with pytest.raises(TypeError, match="got list"):
        response_json(_response(b"[1, 2]"))


def test_custom_object_must_be_a_json_object() -> None:
    found: object = {"items": [], "metadata": {"resourceVersion": "7"}}
    assert json_object(found) is found
    with pytest.raises(TypeError, match="got str"):
        json_object("Not Found")
