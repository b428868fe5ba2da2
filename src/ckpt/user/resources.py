"""Checkpoint resources as the user's kubeconfig sees them (official Kubernetes client)."""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config
from kubernetes.config.kube_config import KubeConfigMerger
from pydantic import BaseModel, ValidationError

from ckpt.apis.checkpoint import GROUP, KIND, PLURAL, VERSION, CheckpointSpec, CheckpointStatus
from ckpt.contract.checkpoints_api import READ_TOKEN_KEY, READ_TOKEN_SECRET, READ_TOKEN_SECRET_TYPE
from ckpt.kubejson import json_object, response_json

S = TypeVar("S", bound=BaseModel)


class UserError(Exception):
    """A problem the user can fix; the message says how."""


def api_client(
    kubeconfig: Path | None = None, context: str | None = None, *, retries: int | None = None
) -> client.ApiClient:
    """A client for the kubeconfig's context. `retries`: how often a failed connection is
    tried again (default: the client's, 3 with backoff)."""
    configuration = client.Configuration()
    configuration.retries = retries
    try:
        config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None,
            context=context,
            client_configuration=configuration,
        )
    except (config.ConfigException, FileNotFoundError) as exc:
        raise UserError(
            f"cannot load a kubeconfig ({exc}); pass --kubeconfig or set KUBECONFIG"
        ) from exc
    return client.ApiClient(configuration)


def context_namespace(kubeconfig: Path | None = None, context: str | None = None) -> str:
    """The namespace kubectl uses with this kubeconfig and context when not given one: the
    context's `namespace`, else "default". The kubeconfig may be a list of files, as in
    KUBECONFIG, merged by the same rules the client's loader applies."""
    paths = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        merged: Any = KubeConfigMerger(paths).config
    except (OSError, yaml.YAMLError, config.ConfigException) as exc:
        raise UserError(f"cannot read the kubeconfig {paths} ({exc})") from exc
    if merged is None:
        raise UserError(f"no kubeconfig at {paths}; pass --kubeconfig or set KUBECONFIG")
    document: dict[str, Any] = merged.value
    name = context or document.get("current-context")
    if not name:
        raise UserError(
            "the kubeconfig has no current context; pass --context "
            "(`kubectl config get-contexts` lists them)"
        )
    for entry in document.get("contexts") or []:
        # The merger wraps each context of the files in a node; its value is the mapping.
        found: Mapping[str, Any] = getattr(entry, "value", entry)
        if found.get("name") == name:
            return str((found.get("context") or {}).get("namespace") or "default")
    raise UserError(
        f"context {name!r} is not in the kubeconfig {paths}; "
        "`kubectl config get-contexts` lists them"
    )


class Checkpoints:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def create(self, namespace: str, name: str, spec: CheckpointSpec) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name},
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        try:
            return json_object(
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body
                )
            )
        except client.ApiException as exc:
            raise UserError(explain(exc, f"create checkpoint {namespace}/{name}")) from exc

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return json_object(
                self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            )
        except client.ApiException as exc:
            raise UserError(explain(exc, f"read checkpoint {namespace}/{name}")) from exc

    def status(self, namespace: str, name: str) -> CheckpointStatus:
        return checkpoint_status(self.get(namespace, name))

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        try:
            if namespace is None:
                found = json_object(
                    self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                )
            else:
                found = json_object(
                    self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
                )
        except client.ApiException as exc:
            raise UserError(explain(exc, "list checkpoints")) from exc
        return list(found.get("items", []))

    def delete(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except client.ApiException as exc:
            if exc.status == 404:
                return  # gone already
            raise UserError(explain(exc, f"delete checkpoint {namespace}/{name}")) from exc

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            response = self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        except client.ApiException as exc:
            raise UserError(explain(exc, f"read pod {namespace}/{name}")) from exc
        return response_json(response)

    def api_token(self, namespace: str) -> str | None:
        """The namespace's read-only token of the checkpoints API, from the Secret the
        operator keeps there; None while there is none (the operator writes it once it
        handles a Checkpoint of the namespace)."""
        where = f"{namespace}/{READ_TOKEN_SECRET}"
        try:
            response = self.core.read_namespaced_secret(
                READ_TOKEN_SECRET, namespace, _preload_content=False
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise UserError(explain(exc, f"read secret {where}")) from exc
        secret = response_json(response)
        # Anyone who may create Secrets in the namespace may make one of this name; only the
        # operator's type is taken (admission holds the operator to it).
        if secret.get("type") != READ_TOKEN_SECRET_TYPE:
            raise UserError(f"secret {where} is not of type {READ_TOKEN_SECRET_TYPE}: not ckpt's")
        try:
            token = base64.b64decode((secret.get("data") or {}).get(READ_TOKEN_KEY, "")).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise UserError(f"secret {where} holds no readable token") from exc
        return token.strip() or None


class Events:
    """The Events about one resource, as `kubectl describe` selects them."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)

    def about(self, resource: Mapping[str, Any]) -> list[dict[str, Any]]:
        metadata = resource.get("metadata") or {}
        namespace = metadata.get("namespace", "")
        selector = ",".join(
            f"involvedObject.{key}={value}"
            for key, value in (
                ("kind", resource.get("kind", "")), ("name", metadata.get("name", "")),
                ("namespace", namespace),
                # A resource deleted and made again under its name has another uid: its
                # predecessor's Events are not its story.
                ("uid", metadata.get("uid", "")),
            )
            if value
        )
        try:
            response = self.core.list_namespaced_event(
                namespace, field_selector=selector, _preload_content=False
            )
        except client.ApiException as exc:
            doing = f"list the events of {namespace}/{metadata.get('name', '')}"
            raise UserError(explain(exc, doing)) from exc
        return list(response_json(response).get("items", []))


def checkpoint_status(resource: Mapping[str, Any]) -> CheckpointStatus:
    """A Checkpoint's status as the operator wrote it (from this same model); an empty one
    until the operator first handles the resource."""
    return read_status(CheckpointStatus, resource, "checkpoint")


def checkpoint_spec(resource: Mapping[str, Any]) -> CheckpointSpec:
    """A Checkpoint's spec, read with the apiserver's rules (the CRD is generated from this
    same model, so only a resource of another ckpt version can fail)."""
    try:
        return CheckpointSpec.from_resource(resource.get("spec") or {})
    except ValidationError as exc:
        raise unreadable(exc, resource, "spec", "checkpoint") from exc


def read_status(model: type[S], resource: Mapping[str, Any], kind: str) -> S:
    try:
        return model.model_validate(resource.get("status") or {})
    except ValidationError as exc:
        raise unreadable(exc, resource, "status", kind) from exc


def unreadable(
    exc: ValidationError, resource: Mapping[str, Any], part: str, kind: str
) -> UserError:
    metadata = resource.get("metadata") or {}
    where = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    return UserError(
        f"cannot read the {part} of {kind} {where} ({exc.error_count()} invalid fields, "
        f"first: {exc.errors()[0]['loc']}); is the operator the same version as this ckpt?"
    )


def explain(exc: client.ApiException, doing: str) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message") or exc.reason
    except ValueError:
        message = exc.reason
    hint = {
        401: "your credentials were refused; check the kubeconfig",
        403: "your user lacks permission; ask a cluster admin",
        404: "not found; is ckpt installed (kubectl apply -k deploy/) and the name right?",
        409: "it already exists; pick another --name",
        422: "the apiserver refused the spec",
    }.get(exc.status or 0, "")
    return f"could not {doing}: {message}" + (f" ({hint})" if hint else "")
