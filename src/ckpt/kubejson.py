"""JSON bodies from the official Kubernetes client, with their types checked.

ckpt reads Kubernetes objects as the apiserver's JSON (camelCase keys, as kopf bodies have
them), not as the client's models. Two places where the client's annotations do not say so:

- called with ``_preload_content=False``, a method annotated as returning a model (``V1Pod``,
  ``V1PodList``) returns the raw urllib3 response instead: ``response_json`` reads its body;
- the custom-object methods are annotated as returning ``object`` (a custom object is
  whatever JSON the apiserver holds): ``json_object`` checks that it is a JSON object.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3


def json_object(found: object) -> dict[str, Any]:
    """``found`` as a JSON object; TypeError if the apiserver answered something else."""
    if not isinstance(found, dict):
        raise TypeError(f"expected a JSON object from the apiserver, got {type(found).__name__}")
    return found


def response_json(response: object) -> dict[str, Any]:
    """The JSON object in the body of a call made with ``_preload_content=False``."""
    if not isinstance(response, urllib3.BaseHTTPResponse):
        raise TypeError(
            f"expected the raw HTTP response of a _preload_content=False call, "
            f"got {type(response).__name__}"
        )
    return json_object(json.loads(response.data))
