"""The policy loop's Kubernetes calls (PolicyKube) over a stand-in for the official client:
what they ask the apiserver, which answers count as done, and how failures become
ClusterError with the apiserver's own message."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3
from kubernetes import client

from ckpt.operator.policy import ClusterError
from ckpt.operator.policy_kube import PolicyKube


def api_error(status: int, message: str = "") -> client.ApiException:
    exc = client.ApiException(status=status, reason={403: "Forbidden", 404: "Not Found",
                                                     409: "Conflict"}.get(status, "Error"))
    exc.body = json.dumps({"kind": "Status", "message": message}).encode()
    return exc


class Custom:
    """CustomObjectsApi's methods the loop calls, recording them; `fail` raises once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.fail: Exception | None = None

    def _record(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((method, args, kwargs))
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure

    def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._record("list", *args, **kwargs)
        return {"items": [{"metadata": {"name": "c1"}}]}

    def create_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> None:
        self._record("create", *args, **kwargs)

    def delete_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> None:
        self._record("delete", *args, **kwargs)

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
        self._record("patch_status", *args, **kwargs)


class Core:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def list_namespaced_pod(self, *args: Any, **kwargs: Any) -> urllib3.HTTPResponse:
        self.calls.append((args, kwargs))
        if not kwargs.get("label_selector"):
            raise api_error(403, "pods is forbidden")
        items = {"items": [{"metadata": {"name": "w0", "ownerReferences": []}}]}
        return urllib3.HTTPResponse(body=json.dumps(items).encode(), preload_content=True)


async def test_pods_are_listed_by_selector_in_the_policys_namespace_only() -> None:
    policy_kube = PolicyKube(client.ApiClient())
    core = Core()
    policy_kube._core = core  # type: ignore[assignment]
    pods = await policy_kube.list_pods("team-a", "app=train")
    # The apiserver's JSON as it is (camelCase), as kopf bodies have it.
    assert pods == [{"metadata": {"name": "w0", "ownerReferences": []}}]
    assert core.calls[0][0] == ("team-a",)
    assert core.calls[0][1]["label_selector"] == "app=train"
    with pytest.raises(ClusterError) as caught:
        await policy_kube.list_pods("team-a", "")
    assert caught.value.status == 403
    assert str(caught.value) == "listing pods '': 403 Forbidden: pods is forbidden"


@pytest.fixture
def kube() -> tuple[PolicyKube, Custom]:
    found = PolicyKube(client.ApiClient())
    custom = Custom()
    found._custom = custom  # type: ignore[assignment]
    return found, custom


async def test_checkpoints_are_listed_by_the_policy_label(kube: tuple[PolicyKube, Custom]) -> None:
    policy_kube, custom = kube
    assert await policy_kube.list_checkpoints("team-a", "train") == [{"metadata": {"name": "c1"}}]
    _, args, kwargs = custom.calls[0]
    assert args == ("ckpt.dev", "v1alpha1", "team-a", "checkpoints")
    assert kwargs["label_selector"] == "ckpt.dev/policy=train"
    await policy_kube.list_restores("team-a")
    assert custom.calls[1][1] == ("ckpt.dev", "v1alpha1", "team-a", "restores")


async def test_a_checkpoint_that_exists_already_is_created(kube: tuple[PolicyKube, Custom]) -> None:
    policy_kube, custom = kube
    custom.fail = api_error(409, 'checkpoints.ckpt.dev "w-1" already exists')
    await policy_kube.create_checkpoint("team-a", {"metadata": {"name": "w-1"}})
    custom.fail = api_error(422, "spec.podName: Invalid value")
    with pytest.raises(ClusterError) as caught:
        await policy_kube.create_checkpoint("team-a", {"metadata": {"name": "w-2"}})
    assert caught.value.status == 422
    assert str(caught.value) == "creating a Checkpoint: 422 Error: spec.podName: Invalid value"


@pytest.mark.parametrize("status", [404, 409])
async def test_a_checkpoint_gone_or_replaced_is_deleted(
    kube: tuple[PolicyKube, Custom], status: int
) -> None:
    policy_kube, custom = kube
    custom.fail = api_error(status)
    await policy_kube.delete_checkpoint("team-a", "w-1", "uid-1")
    _, args, kwargs = custom.calls[0]
    assert args == ("ckpt.dev", "v1alpha1", "team-a", "checkpoints", "w-1")
    # Only the object the plan saw: a newer one of the same name is left alone.
    assert kwargs["body"].preconditions.uid == "uid-1"


async def test_status_goes_to_the_status_subresource(kube: tuple[PolicyKube, Custom]) -> None:
    policy_kube, custom = kube
    await policy_kube.patch_policy_status("team-a", "train", {"podsCovered": 1})
    _, args, _ = custom.calls[0]
    assert args == ("ckpt.dev", "v1alpha1", "team-a", "checkpointpolicies", "train",
                    {"status": {"podsCovered": 1}})


async def test_an_apiserver_that_does_not_answer_is_a_cluster_error(
    kube: tuple[PolicyKube, Custom]
) -> None:
    policy_kube, custom = kube
    custom.fail = urllib3.exceptions.MaxRetryError(None, "/apis", "connection refused")  # type: ignore[arg-type]
    with pytest.raises(ClusterError) as caught:
        await policy_kube.list_checkpoints("team-a", "train")
    assert caught.value.status is None
    assert str(caught.value).startswith("listing the policy's Checkpoints: ")
