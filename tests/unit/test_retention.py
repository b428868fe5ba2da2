"""Deleting a Checkpoint (`retention.release`) with small fakes of the checkpoints API and of a
node's agents sharing one archive folder: which record is deprecated, which archive deleted,
through which agent, and what a forged status gets (issue 21 finding 2, issue 22)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import pytest

from ckpt.apis.checkpoint import CheckpointSpec, CheckpointStatus, Phase, RetainPolicy
from ckpt.contract.checkpoints_api import Checkpoint
from ckpt.contract.checkpoints_api import CheckpointStatus as ApiStatus
from ckpt.errors import NotFound, Unavailable
from ckpt.operator import binding
from ckpt.operator.agents import AgentPod
from ckpt.operator.locations import Locations
from ckpt.operator.reconcile import Resource
from ckpt.operator.retention import RetentionError, release

NS, VICTIMS, NODE = "apps", "victims", "node-1"
CPU = AgentPod("ckpt-agent-aaaa", "ckpt-system", NODE, "10.0.0.1", 8443, gpu=False, ready=True)
GPU = AgentPod("ckpt-agent-gpu-bbbb", "ckpt-system", NODE, "10.0.0.2", 8443, gpu=True, ready=True)
ROOT = "file:///var/lib/ckpt/archives"


class FakeApi:
    def __init__(self) -> None:
        self.records: dict[str, Checkpoint] = {}
        self.deprecated: list[str] = []

    async def list(self, ids: Iterable[str]) -> list[Checkpoint]:
        return [self.records[i] for i in ids if i in self.records]

    async def deprecate(self, checkpoint_id: str) -> None:
        self.deprecated.append(checkpoint_id)
        record = self.records[checkpoint_id]
        self.records[checkpoint_id] = record.model_copy(update={"status": ApiStatus.deprecated})


class Node:
    """One node's archive folder and its agent pods. Each agent knows the jobs it ran (or
    found recorded when it started) and deletes only their archives, answering as the real
    agent does: 404 `not_found` for a job it does not know, 404 `gone` for a known job whose
    file is not there."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.jobs: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []
        self.down: set[str] = set()

    async def delete_archive(self, agent: AgentPod, checkpoint_id: str) -> None:
        self.calls.append(agent.name)
        if agent.name in self.down:
            raise Unavailable(f"agent {agent.ref} unreachable: ConnectError()")
        url = self.jobs.get(agent.name, {}).get(checkpoint_id)
        if url is None:
            raise NotFound(f"no checkpoint job {checkpoint_id!r}", status=404, code="not_found")
        if url not in self.files:
            raise NotFound(f"archive {url} does not exist", status=404, code="gone")
        self.files.remove(url)


class World:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.node = Node()
        self.agent_pods = [CPU, GPU]

    def checkpoint(
        self, namespace: str = NS, *, by: AgentPod = GPU, uid: str | None = None,
        policy: RetainPolicy = RetainPolicy.Delete, bound: bool = True,
    ) -> tuple[Resource, CheckpointStatus]:
        """A Ready checkpoint taken by agent `by`: its archive on the node, its record in the
        API (`bound`: with the binding info this operator writes)."""
        checkpoint_id = str(uuid.uuid4())
        uid = uid or str(uuid.uuid4())
        url = f"{ROOT}/{namespace}/{checkpoint_id}.tar.zst"
        self.node.files.add(url)
        self.node.jobs.setdefault(by.name, {})[checkpoint_id] = url
        info: dict[str, Any] = {"namespace": namespace, "pod": "db", "node": NODE,
                                "agent": by.ref}
        if bound:
            info |= binding.record_info(namespace=namespace, pod="db", uid=uid,
                                        restore_path=url, storage_location=None)
        self.api.records[checkpoint_id] = Checkpoint(
            id=uuid.UUID(checkpoint_id), status=ApiStatus.ready, gpu="none",
            platform="linux/amd64", checksum="sha256:" + "ab" * 32, info=info,
            name=f"{namespace}/db-ckpt",
        )
        resource = Resource(
            namespace=namespace, name="db-ckpt", uid=uid, created=dt.datetime.now(dt.UTC),
            spec=CheckpointSpec(pod_name="db", retain_policy=policy),
        )
        status = CheckpointStatus(
            phase=Phase.Ready, checkpoint_id=checkpoint_id, node_name=NODE, agent=by.ref,
            restore_path=url, checksum="sha256:" + "ab" * 32,
        )
        return resource, status

    async def release(
        self, resource: Resource, status: CheckpointStatus, locations: Locations | None = None
    ) -> list[str]:
        return await release(
            resource, status, self.api,  # type: ignore[arg-type]
            self.node, self.agent_pods, locations=locations,
        )


async def test_a_node_local_archive_is_deleted_by_the_agent_that_wrote_it() -> None:
    # Issue 22: the node's first agent pod (CPU) did not run the job and answers 404, which
    # the operator took for "deleted" while the file stayed. The GPU agent wrote it.
    world = World()
    resource, status = world.checkpoint(by=GPU)
    done = await world.release(resource, status)
    assert world.node.files == set()
    assert world.node.calls == [GPU.name]
    assert done == [
        f"deprecated {status.checkpoint_id} in the API",
        f"deleted {status.restore_path} through agent {GPU.ref}",
    ]


async def test_the_nodes_other_agents_are_asked_when_the_writer_is_gone() -> None:
    # The writer's pod was replaced; its successor found the job's record at start.
    world = World()
    resource, status = world.checkpoint(by=GPU)
    successor = AgentPod("ckpt-agent-gpu-cccc", "ckpt-system", NODE, "10.0.0.3", 8443,
                         gpu=True, ready=True)
    world.node.jobs[successor.name] = world.node.jobs.pop(GPU.name)
    world.agent_pods = [CPU, successor]
    done = await world.release(resource, status)
    assert world.node.files == set()
    assert world.node.calls == [CPU.name, successor.name]
    assert done[-1] == f"deleted {status.restore_path} through agent {successor.ref}"


async def test_an_archive_no_agent_knows_is_not_reported_deleted_and_is_retried() -> None:
    # The job record expired (or no agent of the node ever had it): every agent answers
    # 404 not_found, which says nothing of the file. Before: "deleted", the file stayed.
    world = World()
    resource, status = world.checkpoint(by=GPU)
    world.node.jobs.clear()
    world.node.down.add(CPU.name)
    with pytest.raises(RetentionError) as error:
        await world.release(resource, status)
    assert str(error.value) == (
        f"no agent on node {NODE} could delete {status.restore_path} "
        f"(ckpt-system/{GPU.name}: not_found; ckpt-system/{CPU.name}: agent "
        f"ckpt-system/{CPU.name} unreachable: ConnectError()); the file stays until one can"
    )
    assert world.node.files == {status.restore_path}
    # The record stays as it was, so the retry can still prove the archive is this one's.
    assert world.api.deprecated == []


async def test_an_archive_already_gone_is_reported_so() -> None:
    world = World()
    resource, status = world.checkpoint(by=CPU)
    world.node.files.clear()
    done = await world.release(resource, status)
    assert done[-1] == f"{status.restore_path} was already gone"
    assert world.api.deprecated == [status.checkpoint_id]


async def test_no_agent_on_the_node_is_retried() -> None:
    world = World()
    resource, status = world.checkpoint()
    world.agent_pods = []
    with pytest.raises(RetentionError, match=f"no agent on node {NODE} to delete"):
        await world.release(resource, status)
    assert world.node.files == {status.restore_path}


async def test_a_status_forged_to_another_namespaces_archive_deletes_nothing() -> None:
    # Issue 21, finding 2: the tenant rewrites its Checkpoint's status to name the victim's
    # record and archive, then deletes the Checkpoint (retainPolicy: Delete). Before, the
    # victim's archive was deleted and its record deprecated.
    world = World()
    _, victim = world.checkpoint(VICTIMS, by=GPU)
    tenant, own = world.checkpoint(NS, by=GPU)
    forged = own.model_copy(update={
        "checkpoint_id": victim.checkpoint_id, "restore_path": victim.restore_path,
    })
    with pytest.raises(binding.NotBound) as refused:
        await world.release(tenant, forged)
    assert refused.value.reason == "BindingMismatch"
    assert "belongs to another namespace than apps" in refused.value.message
    assert VICTIMS not in refused.value.message
    assert victim.restore_path in world.node.files
    assert world.node.calls == [] and world.api.deprecated == []


async def test_a_status_forged_to_another_namespaces_object_deletes_nothing() -> None:
    # The same through an S3 location: refused before the location is even resolved
    # for a delete.
    world = World()
    _, victim = world.checkpoint(VICTIMS)
    tenant, own = world.checkpoint(NS)
    victim_url = f"s3://ckpt/{VICTIMS}/{victim.checkpoint_id}.tar.zst"
    forged = own.model_copy(update={
        "checkpoint_id": victim.checkpoint_id, "restore_path": victim_url,
        "storage_location": "shared",
    })

    async def unused(*_: Any) -> Any:
        raise AssertionError("nothing is resolved for a refused deletion")

    with pytest.raises(binding.NotBound):
        await world.release(tenant, forged, Locations(unused, unused, unused))
    assert world.api.deprecated == []


async def test_a_status_forged_to_another_record_of_the_namespace_keeps_both() -> None:
    world = World()
    _, other = world.checkpoint(NS)
    mine, status = world.checkpoint(NS, policy=RetainPolicy.Retain)
    forged = status.model_copy(update={"checkpoint_id": other.checkpoint_id})
    with pytest.raises(binding.NotBound) as refused:
        await world.release(mine, forged)
    assert refused.value.reason == "BindingMismatch"
    assert world.api.deprecated == []


async def test_a_record_without_the_binding_keeps_its_archive() -> None:
    # Recorded by an operator that did not bind records: nothing proves whose archive it is.
    world = World()
    resource, status = world.checkpoint(bound=False)
    with pytest.raises(binding.NotBound) as refused:
        await world.release(resource, status)
    assert refused.value.reason == "CheckpointNotBound"
    assert status.restore_path in world.node.files and world.api.deprecated == []
    # Retained archives: the record of its own namespace is deprecated as before.
    retained = dataclasses.replace(
        resource, spec=CheckpointSpec(pod_name="db", retain_policy=RetainPolicy.Retain)
    )
    assert await world.release(retained, status) == [
        f"deprecated {status.checkpoint_id} in the API"
    ]
    assert status.restore_path in world.node.files


async def test_a_checkpoint_deleted_before_it_was_recorded_deprecates_its_record() -> None:
    world = World()
    resource, status = world.checkpoint()
    record = world.api.records[str(status.checkpoint_id)]
    # Registered (named <namespace>/<name>), no info yet, no archive in status.
    world.api.records[str(status.checkpoint_id)] = record.model_copy(
        update={"status": ApiStatus.initializing, "info": None}
    )
    pending = CheckpointStatus(phase=Phase.Checkpointing, checkpoint_id=status.checkpoint_id)
    assert await world.release(resource, pending) == [
        f"deprecated {status.checkpoint_id} in the API"
    ]
    # Another namespace's record in the same state is not.
    other, _ = world.checkpoint(VICTIMS)
    with pytest.raises(binding.NotBound):
        await world.release(other, pending)


async def test_a_status_without_a_record_deletes_nothing() -> None:
    world = World()
    resource, status = world.checkpoint()
    del world.api.records[str(status.checkpoint_id)]
    with pytest.raises(binding.NotBound):
        await world.release(resource, status)
    assert status.restore_path in world.node.files
    without_id = status.model_copy(update={"checkpoint_id": None})
    with pytest.raises(binding.NotBound):
        await world.release(resource, without_id)


async def test_an_object_of_its_own_namespace_is_deleted_through_its_location(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    resource, status = world.checkpoint(NS)
    url = f"s3://ckpt/team/{NS}/{status.checkpoint_id}.tar.zst"
    record = world.api.records[str(status.checkpoint_id)]
    world.api.records[str(status.checkpoint_id)] = record.model_copy(update={"info": {
        **binding.info_of(record), "restore_path": url, "storage_location": "shared",
    }})
    status = status.model_copy(update={"restore_path": url, "storage_location": "shared"})
    shared = {"metadata": {"name": "shared"},
              "spec": {"type": "s3", "bucket": "ckpt", "prefix": "team"}}

    async def get(name: str) -> dict[str, Any] | None:
        return shared if name == "shared" else None

    async def unused(*_: Any) -> Any:
        raise AssertionError("not needed")

    deleted: list[tuple[str | None, str]] = []

    async def delete_through_location(_: Any, location: str | None, target: str) -> bool:
        deleted.append((location, target))
        return True

    monkeypatch.setattr("ckpt.operator.retention.delete_through_location",
                        delete_through_location)
    done = await world.release(resource, status, Locations(get, unused, unused))
    assert deleted == [("shared", url)]
    assert done == [f"deprecated {status.checkpoint_id} in the API", f"deleted {url}"]
    assert world.node.calls == []
