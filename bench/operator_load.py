"""Benchmark of the Checkpoint operator: N Checkpoints created at once against one node agent.

Run (as root, from the repository root):

    .venv/bin/python bench/operator_load.py [--sizes 1 20 100] [--reps 3 3 2] [--budget 480]

A local control plane (etcd + kube-apiserver), the checkpoints API, one node agent and the
kopf operator run as real processes (``harness``). For each batch size N it starts N small
busybox counter containers under runc, registers each as a Pod (one container per pod), and
only then starts the clock: N Checkpoint resources are created at once (a thread pool) and a
watch on the namespace records when each one turns Ready. Everything the run made
(Checkpoints and their archives, pods, containers) is removed before the next run.

Where the time goes, per checkpoint i (all clocks are this machine's wall clock):

    created_i    the bench issues the create (client side)
    registered_i the checkpoints API created the record (its database's created_at)
    submitted_i  the agent accepted the job (its job record's created_at)
    start_i      the job got an agent slot   = finished_i - agent_i
    finished_i   the agent finished the job  (its job record's last update)
    recorded_i   the API record was marked uploaded (its database's updated_at)
    ready_i      the bench's watch saw phase Ready

    e2e_i      = ready_i - created_i        what a user waits for
    agent_i    = the agent pipeline's own total (freeze + gpu + dump + store + its glue)
    queue_i    = start_i - submitted_i      waiting for one of the agent's slots
    operator_i = e2e_i - agent_i - queue_i  = accept + handoff + record + publish:
      accept   = registered - created       apiserver, kopf (finalizer, daemon), pod GET,
                                            Accepted patch, API create
      handoff  = submitted - registered     Registered + Checkpointing patches, agent GET+POST
      record   = recorded - finished        poll lag, API list + info + uploaded
      publish  = ready - recorded           the Ready patch and its watch event

Queueing at the agent (at most ``CKPT_AGENT_MAX_CONCURRENT_JOBS`` jobs, default 2) is not
operator overhead, so it is taken out. ``status.timings.total - (freeze + gpu + dump +
store)``, what a user can compute from the resource, is shown too: it includes the queue, and
the operator's clock starts at ``startedAt`` (whole seconds) after kopf has dispatched.

For the batch, ``wall = last Ready - first create``, and the agent alone could not finish
sooner than ``bound = max(sum(agent_i) / concurrency, max(agent_i))``. ``wall - bound`` is the
plain overhead; ``Run.breakdown`` splits the wall instant by instant (head, tail, and idle
agent slots as handoff, starved or drain), and the operator's share is head + starved + tail:
the time the operator is on the batch's critical path, with the agent's queueing and the
drain of its last jobs left out.

Needs root, runc and CRIU >= 4 (tools/criu/install.sh). Other processes on the machine skew
the numbers; the load average is printed with them. Besides the tables it saves
bench/results/operator_load.json (per size, the medians and each run's summary) and draws
bench/plots/operator_load.svg (bench/plots.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from kubernetes import client, watch

from bench.results import Recorder
from bench.simulated_stack import LocalStack
from bench.stats import median, median_and_max, percentile
from ckpt.apis.checkpoint import GROUP, PLURAL, VERSION
from ckpt.operator.settings import OperatorSettings
from harness.containers import BusyboxContainer, Runc
from harness.controlplane import Cluster, LocalControlPlane
from harness.tools import criu_binary

T = TypeVar("T")
R = TypeVar("R")
TERMINAL = {"Ready", "Failed"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- measurements


@dataclass
class Sample:
    """One checkpoint's timeline, in seconds (wall clock) and milliseconds (agent/status)."""

    name: str
    created: float
    ready: float
    phase: str
    registered: float = 0.0  # the checkpoints API created its record
    submitted: float = 0.0
    finished: float = 0.0
    recorded: float = 0.0  # the API record's last update (`uploaded`)
    agent_ms: int = 0  # the agent pipeline's own total
    work_ms: int = 0  # freeze + gpu + dump + store
    status_total_ms: int = 0  # status.timings.total, as the operator reports it
    writes: int = 0  # MODIFIED events the watch saw for it (status and metadata patches)

    @property
    def e2e(self) -> float:
        return self.ready - self.created

    @property
    def agent(self) -> float:
        return self.agent_ms / 1000

    @property
    def start(self) -> float:
        return self.finished - self.agent

    @property
    def queue(self) -> float:
        # Records have microsecond times, the pipeline total whole milliseconds: clamp jitter.
        return max(0.0, self.start - self.submitted)

    @property
    def pre(self) -> float:
        return self.submitted - self.created

    @property
    def post(self) -> float:
        return self.ready - self.finished

    @property
    def operator(self) -> float:
        return self.e2e - self.agent - self.queue

    # pre and post, split at the checkpoints API's own timestamps:
    @property
    def accept(self) -> float:
        """Create -> API record: apiserver, kopf (finalizer, daemon), pod GET, Accepted patch."""
        return self.registered - self.created

    @property
    def hand_off(self) -> float:
        """API record -> agent job: Registered and Checkpointing patches, agent GET + POST."""
        return self.submitted - self.registered

    @property
    def record(self) -> float:
        """Agent done -> API record uploaded: poll lag, API list, info, uploaded."""
        return self.recorded - self.finished

    @property
    def publish(self) -> float:
        """API uploaded -> the watch sees Ready: the final status patch and its watch event."""
        return self.ready - self.recorded

    @property
    def status_overhead(self) -> float:
        return (self.status_total_ms - self.work_ms) / 1000


@dataclass
class Run:
    size: int
    concurrency: int
    samples: list[Sample]  # the checkpoints that went Ready
    failures: list[str]  # "name: message" of those that ended Failed
    cpu: dict[str, float]  # CPU seconds per process group during the run
    events: int  # Kubernetes Events posted in the namespace
    load: tuple[float, float]  # 1-minute load average before and after
    poll_interval: float
    archives_left: int = 0  # archives still on disk after the Checkpoints were deleted

    @property
    def wall(self) -> float:
        return max(s.ready for s in self.samples) - min(s.created for s in self.samples)

    @property
    def bound(self) -> float:
        agent = [s.agent for s in self.samples]
        return max(sum(agent) / self.concurrency, max(agent))

    @property
    def overhead(self) -> float:
        return self.wall - self.bound

    def breakdown(self) -> dict[str, float]:
        """The wall, instant by instant, by what held the batch up (sums to the wall):

        head: nothing has reached the agent yet; tail: the agent is done, Ready not yet seen;
        in between, an agent slot left idle counts 1/concurrency of the time it is idle, as
        handoff (jobs wait at the agent: its own doing), starved (the operator still holds
        created checkpoints it has not handed over), or drain (nothing left to hand over:
        the last jobs of a batch run alone). The rest is the agent working.

        operator share = head + starved + tail: the part of the wall the operator is on the
        critical path for, with the agent's queueing and its drain left out.
        """
        first_start = min(s.start for s in self.samples)
        last_finish = max(s.finished for s in self.samples)
        parts = {"head": first_start - min(s.created for s in self.samples),
                 "starved": 0.0, "handoff": 0.0, "drain": 0.0, "agent": 0.0,
                 "tail": max(s.ready for s in self.samples) - last_finish}
        edges = sorted({first_start, last_finish, *(
            t for s in self.samples for t in (s.created, s.submitted, s.start, s.finished)
            if first_start < t < last_finish)})
        for lo, hi in itertools.pairwise(edges):
            mid = (lo + hi) / 2
            busy = sum(s.start <= mid < s.finished for s in self.samples)
            idle = max(0, self.concurrency - busy) / self.concurrency
            # Work waiting at the agent makes an idle slot the agent's, whatever else holds.
            if sum(s.submitted <= mid < s.start for s in self.samples):
                cause = "handoff"
            elif sum(s.created <= mid < s.submitted for s in self.samples):
                cause = "starved"
            else:
                cause = "drain"
            parts[cause] += (hi - lo) * idle
            parts["agent"] += (hi - lo) * (1 - idle)
        return parts

    @property
    def operator_share(self) -> float:
        parts = self.breakdown()
        return parts["head"] + parts["starved"] + parts["tail"]

    @property
    def max_overlap(self) -> int:
        """Most jobs seen in agent slots at once: checks the concurrency the bound assumes."""
        edges = sorted(
            [(s.start, 1) for s in self.samples] + [(s.finished, -1) for s in self.samples]
        )
        level = peak = 0
        for _, step in edges:
            level += step
            peak = max(peak, level)
        return peak

    def poll_lag(self) -> list[float]:
        """For each job, when the operator's backoff schedule polls next after the job
        finished (0.5 s then x1.5 up to 2 s from the POST; request time ignored): the share
        of `post` that is waiting on the poll interval."""
        lags = []
        for s in self.samples:
            t, delay = s.submitted, self.poll_interval
            while t < s.finished:
                t += delay
                delay = min(delay * 1.5, 2.0)
            lags.append(t - s.finished)
        return lags


def _utc(value: str) -> float:
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).timestamp()


# ---------------------------------------------------------------------------- CPU accounting


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime (+ reaped children's: the agent's runc and CRIU) of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    # Fields after the command: state is index 0, utime 11, stime 12, cutime 13, cstime 14.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def _pids_with(fragment: str) -> list[int]:
    """Processes whose command line mentions `fragment` (etcd and kube-apiserver of our
    control plane name its workdir; other engineers' processes do not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if fragment.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


class CpuMeter:
    def __init__(self, stack: LocalStack, controlplane_dir: Path) -> None:
        self.stack = stack
        self.controlplane = _pids_with(str(controlplane_dir))

    def snapshot(self) -> dict[str, float]:
        stack = self.stack
        assert stack.operator and stack.agent and stack.api
        busy, total = _machine_busy()
        return {
            "operator": _cpu_seconds(stack.operator.pid),
            "agent+runc+criu": _cpu_seconds(stack.agent.pid, children=True),
            "api": _cpu_seconds(stack.api.pid),
            "apiserver+etcd": sum(_cpu_seconds(pid) for pid in self.controlplane),
            "machine busy": busy,
            "machine total": total,
        }


# ---------------------------------------------------------------------------- the bench


def _parallel(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


class Bench:
    def __init__(
        self, cluster: Cluster, stack: LocalStack, runc: Runc, workdir: Path, cpu: CpuMeter,
        concurrency: int,
    ) -> None:
        self.cluster = cluster
        self.stack = stack
        self.runc = runc
        self.workdir = workdir
        self.cpu = cpu
        self.concurrency = concurrency
        self.api_client = cluster.api_client()
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.records = stack.workdir / f"ckpt-agent-{stack.node}" / "jobs" / "checkpoints"
        self.archives_left: list[int] = []
        self._archives: list[str] = []

    # -- the workload -----------------------------------------------------------------------

    def start_containers(self, n: int) -> list[BusyboxContainer]:
        bundles = self.workdir / "bundles"
        boxes = [
            BusyboxContainer.create(
                bundles, self.runc, container_id=f"bench-{i}-{secrets.token_hex(3)}"
            )
            for i in range(n)
        ]
        try:
            # runc run is mostly waiting on the kernel; a few at a time keeps 100 under a minute.
            _parallel(lambda box: box.start(), boxes, 8)
            for box in boxes:
                box.wait_ready()
        except BaseException:
            self.close_containers(boxes)
            raise
        return boxes

    def close_containers(self, boxes: Sequence[BusyboxContainer]) -> None:
        _parallel(lambda box: box.close(), boxes, 8)

    def register_pods(self, namespace: str, boxes: Sequence[BusyboxContainer]) -> list[str]:
        """One Pod per container, as LocalStack.register_pod writes it, through the API client
        rather than two kubectl processes per pod (100 pods would cost a minute of CPU)."""
        names = [f"counter-{i}" for i in range(len(boxes))]

        def register(item: tuple[str, BusyboxContainer]) -> None:
            name, box = item
            pod = self.core.create_namespaced_pod(namespace, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"nodeName": self.stack.node,
                         "containers": [{"name": "app", "image": "busybox"}]},
            })
            # The agent dumps only a container whose runtime records name the requested pod.
            box.record_pod(namespace, name, pod.metadata.uid, "app")
            self.core.patch_namespaced_pod_status(name, namespace, {"status": {
                "phase": "Running",
                "containerStatuses": [{
                    "name": "app", "containerID": f"containerd://{box.id}", "ready": True,
                    "restartCount": 0, "image": "busybox", "imageID": "",
                    "state": {"running": {}},
                }],
            }})

        _parallel(register, list(zip(names, boxes, strict=True)), 8)
        return names

    # -- one run -----------------------------------------------------------------------------

    def run(self, size: int, timeout: float) -> Run:
        self._archives = []
        namespace = f"bench-{size}-{secrets.token_hex(3)}"
        with contextlib.suppress(client.ApiException):
            self.core.create_namespace({"metadata": {"name": namespace}})
        boxes = self.start_containers(size)
        try:
            pods = self.register_pods(namespace, boxes)
            result = self._measure(namespace, pods, timeout)
        finally:
            self._clean(namespace, boxes)
        result.archives_left = self.archives_left[-1]
        return result

    def _measure(self, namespace: str, pods: list[str], timeout: float) -> Run:
        names = [f"ckpt-{pod}" for pod in pods]
        watcher = Watcher(self.cluster, namespace, set(names))
        watcher.start()
        load_before = os.getloadavg()[0]
        cpu_before = self.cpu.snapshot()
        created: dict[str, float] = {}

        def create(name_pod: tuple[str, str]) -> None:
            name, pod = name_pod
            body = {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Checkpoint",
                "metadata": {"name": name},
                # Delete: the archives go with the resources between runs.
                "spec": {"podName": pod, "retainPolicy": "Delete"},
            }
            created[name] = time.time()
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

        # "At once": 8 creates in flight, within the client's pool (5 connections per CPU), so
        # no request waits on a connection and none is opened and thrown away.
        try:
            _parallel(create, list(zip(names, pods, strict=True)), 8)
            if not watcher.done.wait(timeout):
                missing = sorted(set(names) - set(watcher.terminal))
                raise RuntimeError(f"{len(missing)} checkpoints not Ready after {timeout}s: "
                                   f"{missing[:5]} ...; see {self.stack.workdir}/operator.log")
            cpu_after = self.cpu.snapshot()
            load_after = os.getloadavg()[0]
        finally:
            watcher.stop()

        samples: list[Sample] = []
        failures: list[str] = []
        ids: list[str] = []
        for name in names:
            when, status = watcher.terminal[name]
            if status.get("phase") != "Ready":
                # Kept out of the statistics, but reported: a failure under load is a result.
                failures.append(f"{name}: {status.get('message')}")
                continue
            timings = status.get("timings") or {}
            sample = Sample(
                name=name, created=created[name], ready=when, phase=status["phase"],
                status_total_ms=int(timings.get("total", 0)),
                work_ms=sum(int(timings.get(k, 0)) for k in ("freeze", "gpu", "dump", "store")),
                writes=watcher.modified.get(name, 0),
            )
            self._agent_side(sample, status["checkpointId"])
            samples.append(sample)
            ids.append(status["checkpointId"])
            self._archives.append(str(status["restorePath"]))
        if not samples:
            raise RuntimeError(f"no checkpoint went Ready: {failures[:3]}")
        self._api_side(samples, ids)
        events = len(self.core.list_namespaced_event(namespace).items)
        return Run(
            size=len(names), concurrency=self.concurrency, samples=samples, failures=failures,
            cpu={k: cpu_after[k] - cpu_before[k] for k in cpu_before}, events=events,
            load=(load_before, load_after), poll_interval=self.stack.poll_interval,
        )

    def _agent_side(self, sample: Sample, checkpoint_id: str) -> None:
        """Submission, finish and pipeline time of the job, from the agent's own record."""
        record = json.loads((self.records / f"{checkpoint_id}.json").read_text())
        sample.submitted = dt.datetime.fromisoformat(record["created_at"]).timestamp()
        sample.finished = dt.datetime.fromisoformat(record["updated_at"]).timestamp()
        sample.agent_ms = int(record["job"]["result"]["timings"]["total"])

    def _api_side(self, samples: list[Sample], ids: list[str]) -> None:
        """When the API created and last updated each record, from its SQLite database (read
        only; naive UTC times), to split pre and post at the API calls."""
        database = self.stack.workdir / "api.db"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = {
                row[0]: row[1:]
                for row in db.execute("SELECT id, created_at, updated_at FROM checkpoints")
            }
        for sample, checkpoint_id in zip(samples, ids, strict=True):
            created, updated = rows[checkpoint_id]
            sample.registered = _utc(created)
            sample.recorded = _utc(updated)

    def _clean(self, namespace: str, boxes: Sequence[BusyboxContainer]) -> None:
        """Checkpoints (the operator's finalizer deprecates them and deletes the archives),
        then pods and containers, so that each run starts from the same state."""
        with contextlib.suppress(client.ApiException):
            self.custom.delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL
            )
        deadline = time.monotonic() + 180
        while self._checkpoints(namespace):
            if time.monotonic() > deadline:
                # Leave nothing behind for the next run, even if the finalizer is stuck.
                print(f"warning: checkpoints in {namespace} not released in time; "
                      "removing their finalizers", file=sys.stderr)
                for name in self._checkpoints(namespace):
                    with contextlib.suppress(client.ApiException):
                        self.custom.patch_namespaced_custom_object(
                            GROUP, VERSION, namespace, PLURAL, name,
                            {"metadata": {"finalizers": None}},
                        )
                break
            time.sleep(0.5)
        # retainPolicy Delete should have removed the archives; count what is left, then
        # remove it so that no run starts with another's files.
        left = [Path(urlparse(a).path) for a in self._archives]
        left = [path for path in left if path.exists()]
        self.archives_left.append(len(left))
        for path in left:
            path.unlink(missing_ok=True)
        # No kubelet here: only a zero grace period removes a pod at once.
        with contextlib.suppress(client.ApiException):
            self.core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        self.close_containers(boxes)
        # The namespace itself stays (Terminating forever without a namespace controller);
        # it is empty and goes with the control plane.

    def _checkpoints(self, namespace: str) -> list[str]:
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return [item["metadata"]["name"] for item in listed["items"]]


class Watcher(threading.Thread):
    """Watches the namespace's Checkpoints; notes when each first reaches a terminal phase.

    It lists first and watches from that resourceVersion, so no event between the start and
    the first create can be missed.
    """

    def __init__(self, cluster: Cluster, namespace: str, names: set[str]) -> None:
        super().__init__(daemon=True, name=f"watch-{namespace}")
        # Its own connection: a watch holds one for its whole life.
        self.api_client = cluster.api_client()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.namespace = namespace
        self.names = names
        self.terminal: dict[str, tuple[float, dict[str, Any]]] = {}
        self.modified: dict[str, int] = {}
        self.done = threading.Event()
        self._ready = threading.Event()
        self._stopping = False
        self._watch = watch.Watch()

    def start(self) -> None:
        super().start()
        if not self._ready.wait(30):
            raise RuntimeError("the Checkpoint watch did not start")

    def stop(self) -> None:
        self._stopping = True
        self._watch.stop()

    def run(self) -> None:
        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL
        )
        version = listed["metadata"]["resourceVersion"]
        self._ready.set()
        while not self._stopping:
            try:
                version = self._follow(version)
            except Exception:
                # stop() closes the stream under the reader; anything else is a dropped
                # connection, and the loop resumes from the last version seen.
                if self._stopping:
                    return
                time.sleep(0.2)

    def _follow(self, version: str) -> str:
        """One watch request; returns the last resourceVersion it saw."""
        for event in self._watch.stream(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
            PLURAL, resource_version=version, timeout_seconds=60,
        ):
            seen = time.time()
            obj = event["object"]
            version = obj["metadata"]["resourceVersion"]
            name = obj["metadata"]["name"]
            if event["type"] == "MODIFIED" and name not in self.terminal:
                self.modified[name] = self.modified.get(name, 0) + 1
            status = obj.get("status") or {}
            if status.get("phase") in TERMINAL and name not in self.terminal:
                self.terminal[name] = (seen, status)
                if self.names <= set(self.terminal):
                    self.done.set()
            if self._stopping:
                break
        return version


# ---------------------------------------------------------------------------- report


@dataclass
class Report:
    runs: dict[int, list[Run]] = field(default_factory=dict)

    def add(self, run: Run) -> None:
        self.runs.setdefault(run.size, []).append(run)

    def markdown(self) -> str:
        out = [
            "Batch (seconds; median over runs, max in brackets when there is more than one). "
            "wall = first create -> last Ready; bound = max(sum agent / concurrency, max "
            "agent); operator share = head + starved + tail (see the breakdown below).",
            "",
            "| N | runs | failed | wall | agent bound | wall - bound | operator share "
            "| operator % of wall | load 1m (before-after) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]

        for size, runs in sorted(self.runs.items()):
            out.append(
                f"| {size} | {len(runs)} | {sum(len(r.failures) for r in runs)} "
                f"| {median_and_max([r.wall for r in runs])} "
                f"| {median_and_max([r.bound for r in runs])} "
                f"| {median_and_max([r.overhead for r in runs])} "
                f"| {median_and_max([r.operator_share for r in runs])} "
                f"| {median_and_max([100 * r.operator_share / r.wall for r in runs], '{:.1f}%')} "
                f"| {', '.join(f'{r.load[0]:.1f}-{r.load[1]:.1f}' for r in runs)} |"
            )
        out += [
            "",
            "Where the wall goes (seconds, median over runs): head = first create -> first "
            "job in an agent slot; tail = last job done -> last Ready; an idle agent slot "
            "counts 1/concurrency of its idle time as handoff (jobs queued at the agent), "
            "starved (the operator still holds unsubmitted checkpoints) or drain (nothing "
            "left to submit); agent = slots in use.",
            "",
            "| N | head | starved | handoff | drain | agent | tail | max jobs at once |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for size, runs in sorted(self.runs.items()):
            parts = [r.breakdown() for r in runs]
            cells = " | ".join(
                f"{median([p[k] for p in parts]):.2f}"
                for k in ("head", "starved", "handoff", "drain", "agent", "tail")
            )
            out.append(f"| {size} | {cells} | {max(r.max_overlap for r in runs)} |")
        out += [
            "",
            "Per checkpoint, pooled over the runs of a size: median / p90, seconds. "
            "operator = e2e - agent - queue = accept + handoff + record + publish; "
            "status-based = status.timings.total - (freeze + gpu + dump + store).",
            "",
            "| N | e2e | agent | queue | operator | operator % of e2e | accept | handoff "
            "| record | publish | poll lag (est.) | status-based | writes |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for size, runs in sorted(self.runs.items()):
            samples = [s for r in runs for s in r.samples]

            def each(values: list[float], fmt: str = "{:.2f}") -> str:
                return f"{fmt.format(median(values))} / {fmt.format(percentile(values, 90))}"

            out.append(
                f"| {size} | {each([s.e2e for s in samples])} "
                f"| {each([s.agent for s in samples])} | {each([s.queue for s in samples])} "
                f"| {each([s.operator for s in samples])} "
                f"| {each([100 * s.operator / s.e2e for s in samples], '{:.0f}%')} "
                f"| {each([s.accept for s in samples])} "
                f"| {each([s.hand_off for s in samples])} "
                f"| {each([s.record for s in samples])} "
                f"| {each([s.publish for s in samples])} "
                f"| {each([lag for r in runs for lag in r.poll_lag()])} "
                f"| {each([s.status_overhead for s in samples])} "
                f"| {each([float(s.writes) for s in samples], '{:.0f}')} |"
            )
        keys = ["operator", "agent+runc+criu", "api", "apiserver+etcd"]
        out += [
            "",
            "CPU seconds per checkpoint while the batch ran (summed over runs, divided by "
            "checkpoints); machine busy = all CPUs, other users' processes included; "
            "events = Kubernetes Events in the namespace at all-Ready (posted asynchronously); "
            "archives left = archive files still there after the Checkpoints "
            "(retainPolicy: Delete) were deleted.",
            "",
            "| N | " + " | ".join(keys) + " | machine busy | events/ckpt | archives left |",
            "|---:|" + "---:|" * (len(keys) + 3),
        ]
        for size, runs in sorted(self.runs.items()):
            count = sum(len(r.samples) for r in runs)
            cells = " | ".join(f"{sum(r.cpu[k] for r in runs) / count:.3f}" for k in keys)
            busy = sum(r.cpu["machine busy"] for r in runs)
            total = sum(r.cpu["machine total"] for r in runs)
            out.append(
                f"| {size} | {cells} | {100 * busy / max(total, 1e-9):.0f}% "
                f"| {sum(r.events for r in runs) / count:.1f} "
                f"| {sum(r.archives_left for r in runs)}/{count} |"
            )
        failures = [f for runs in self.runs.values() for r in runs for f in r.failures]
        if failures:
            out += ["", "Failed checkpoints (left out of every statistic above):", ""]
            out += [f"- {failure}" for failure in failures]
        return "\n".join(out)

    def rows(self) -> list[dict[str, Any]]:
        """Per size, the table's medians and each run's summary (no per-checkpoint samples:
        `--json` writes those)."""
        out = []
        for size, runs in sorted(self.runs.items()):
            parts = [r.breakdown() for r in runs]
            out.append({
                "size": size,
                "wall": median([r.wall for r in runs]),
                "bound": median([r.bound for r in runs]),
                "overhead": median([r.overhead for r in runs]),
                "operator_share": median([r.operator_share for r in runs]),
                "operator_pct": median([100 * r.operator_share / r.wall for r in runs]),
                "breakdown": {k: median([p[k] for p in parts]) for k in parts[0]},
                "e2e_median": median([s.e2e for r in runs for s in r.samples]),
                "runs": [{"wall": r.wall, "bound": r.bound, "breakdown": part,
                          "operator_share": r.operator_share, "load": list(r.load),
                          "cpu": r.cpu, "events": r.events, "checkpoints": len(r.samples),
                          "failures": len(r.failures), "archives_left": r.archives_left}
                         for r, part in zip(runs, parts, strict=True)],
            })
        return out

    def raw(self) -> dict[str, Any]:
        return {
            str(size): [
                {"wall": r.wall, "bound": r.bound, "breakdown": r.breakdown(), "cpu": r.cpu,
                 "events": r.events, "load": r.load, "archives_left": r.archives_left,
                 "failures": r.failures,
                 "samples": [{**s.__dict__, "e2e": s.e2e, "queue": s.queue, "pre": s.pre,
                              "post": s.post, "operator": s.operator} for s in r.samples]}
                for r in runs
            ]
            for size, runs in self.runs.items()
        }


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--reps", type=int, nargs="+", default=[3, 3, 2],
                        help="repetitions per size (the last value repeats for extra sizes)")
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds after which no further repetition starts (each size "
                             "still gets its first run)")
    parser.add_argument("--agent-jobs", type=int, default=None,
                        help="CKPT_AGENT_MAX_CONCURRENT_JOBS for the agent (default: the "
                             "agent's own default, 2)")
    parser.add_argument("--poll-interval", type=float,
                        default=OperatorSettings.model_fields["poll_interval"].default,
                        help="CKPT_OPERATOR_POLL_INTERVAL (default: the operator's own)")
    parser.add_argument("--timeout", type=float, default=300, help="per run, seconds")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write raw samples here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the bench runs containers with runc and CRIU: run it as root")
    # SIGTERM (`timeout`, a CI cancel) would end Python without its `finally` blocks and leave
    # etcd, the apiserver, the stack and 100 containers behind: make it unwind like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    if args.agent_jobs is not None:
        # LocalStack passes its agent os.environ plus its own settings; this is not one of them.
        os.environ["CKPT_AGENT_MAX_CONCURRENT_JOBS"] = str(args.agent_jobs)
    concurrency = int(os.environ.get("CKPT_AGENT_MAX_CONCURRENT_JOBS", "2"))
    own_workdir = args.workdir is None
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="ckpt-bench-operator-"))
    reps = list(args.reps) + [args.reps[-1]] * max(0, len(args.sizes) - len(args.reps))
    recorder = Recorder("operator_load", {
        "sizes": args.sizes, "reps": reps, "budget": args.budget,
        "agent_jobs": concurrency, "poll_interval": args.poll_interval})
    began = time.monotonic()
    report = Report()

    control_plane = LocalControlPlane(workdir / "controlplane")
    runc = Runc(root=workdir / "runc", criu=criu_binary())
    stack: LocalStack | None = None
    try:
        cluster = control_plane.start()
        stack = LocalStack(cluster, workdir / "stack", runc, poll_interval=args.poll_interval)
        stack.start()
        assert stack.operator is not None
        # The stack syncs Ready checkpoints with the API every 5 s (quick tests); a deployed
        # operator does it every 60 s. Early-Ready checkpoints of a batch must not add load
        # that production would not have, so restart the operator with its own default.
        stack.operator.env["CKPT_OPERATOR_SYNC_INTERVAL"] = str(
            OperatorSettings.model_fields["sync_interval"].default
        )
        stack.operator.restart()
        bench = Bench(cluster, stack, runc, workdir, CpuMeter(stack, workdir / "controlplane"),
                      concurrency)
        print(f"setup {time.monotonic() - began:.0f}s; agent concurrency {concurrency}, "
              f"poll interval {args.poll_interval}s, {os.cpu_count()} CPUs", file=sys.stderr)
        # One untimed checkpoint first: the operator's watches, the agent's TokenReview cache
        # and lazy imports would otherwise land on the first timed run.
        bench.run(1, args.timeout)
        # Small sizes first, round-robin over repetitions, so that a tight budget still
        # gives every size a run and the repeats come last.
        plan = [(size, rep) for rep in range(max(reps))
                for size, count in zip(args.sizes, reps, strict=True) if rep < count]
        for size, rep in plan:
            if rep > 0 and time.monotonic() - began > args.budget:
                print(f"budget spent: skipping N={size} repetition {rep + 1}", file=sys.stderr)
                continue
            run = bench.run(size, args.timeout)
            report.add(run)
            print(f"N={size} rep {rep + 1}: wall {run.wall:.2f}s, bound {run.bound:.2f}s, "
                  f"overhead {run.overhead:.2f}s ({100 * run.overhead / run.wall:.0f}%), "
                  f"load {run.load[0]:.1f}->{run.load[1]:.1f}, "
                  f"elapsed {time.monotonic() - began:.0f}s", file=sys.stderr)
    finally:
        if stack is not None:
            stack.stop()
        for container_id in runc.list_ids():
            runc.run("delete", "--force", container_id, check=False)
        control_plane.stop()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(report.markdown())
    print(f"\ntotal {time.monotonic() - began:.0f}s; load average now "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(report.raw(), indent=1))
    recorder.save(report.rows())


if __name__ == "__main__":
    main()
