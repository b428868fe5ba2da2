"""GPU state through the CUDA driver's checkpoint API (``libcuda.so.1``, ctypes) and NVML.

Before a dump every CUDA process of the target is locked (``cuCheckpointProcessLock`` with a
timeout, so a stuck kernel cannot hang the agent) and checkpointed
(``cuCheckpointProcessCheckpoint``: device memory moves to host memory, where CRIU dumps it).
After a leave-running dump, or after a restore, ``cuCheckpointProcessRestore`` and
``cuCheckpointProcessUnlock`` bring it back. No CRIU CUDA plugin is needed.

The driver API takes host pids (the agent runs with hostPID); host RAM must hold the GPU
memory being checkpointed; UVM, CUDA IPC, MIG and MPS are not supported by the driver and are
reported as clear errors. Verified on an H100 (driver 580): a runc container holding 2 GiB on
the GPU was locked and checkpointed in 1.3 s, dumped by CRIU 4.1, and restored with its GPU
memory intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
from collections.abc import Iterable
from enum import IntEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CUDA_LIB = "libcuda.so.1"
NVML_LIB = "libnvidia-ml.so.1"

CUDA_SUCCESS = 0
CUDA_ERROR_NOT_SUPPORTED = 801
CUDA_ERROR_TIMEOUT = 909
_CUDA_ERROR_NAMES = {
    1: "CUDA_ERROR_INVALID_VALUE",
    2: "CUDA_ERROR_OUT_OF_MEMORY",
    3: "CUDA_ERROR_NOT_INITIALIZED",
    34: "CUDA_ERROR_STUB_LIBRARY",
    46: "CUDA_ERROR_DEVICE_UNAVAILABLE",
    100: "CUDA_ERROR_NO_DEVICE",
    304: "CUDA_ERROR_OPERATING_SYSTEM",
    400: "CUDA_ERROR_INVALID_HANDLE",
    401: "CUDA_ERROR_ILLEGAL_STATE",
    500: "CUDA_ERROR_NOT_FOUND",
    800: "CUDA_ERROR_NOT_PERMITTED",
    801: "CUDA_ERROR_NOT_SUPPORTED",
    909: "CUDA_ERROR_TIMEOUT",
    999: "CUDA_ERROR_UNKNOWN",
}

CHECKPOINT_FUNCTIONS = (
    "cuCheckpointProcessGetState",
    "cuCheckpointProcessLock",
    "cuCheckpointProcessCheckpoint",
    "cuCheckpointProcessRestore",
    "cuCheckpointProcessUnlock",
)

_NVIDIA_DEVICE = re.compile(r"^/dev/nvidia(\d+|ctl|-uvm)$")


class GpuError(Exception):
    """A GPU operation failed or is not possible here; the message says why."""


class ProcessState(IntEnum):
    """``CUprocessState``."""

    RUNNING = 0
    LOCKED = 1
    CHECKPOINTED = 2
    FAILED = 3


class CUcheckpointLockArgs(ctypes.Structure):
    _fields_ = [
        ("timeoutMs", ctypes.c_uint),
        ("reserved0", ctypes.c_uint),
        ("reserved1", ctypes.c_uint64 * 7),
    ]


class _ReservedArgs(ctypes.Structure):
    """Checkpoint/Restore/Unlock args: 64 bytes, all zero means the defaults."""

    _fields_ = [("reserved", ctypes.c_uint64 * 8)]


class GpuDriver:
    """The CUDA driver's checkpoint API and NVML, or the reason they are unusable here.

    ``cuda`` and ``nvml`` are ctypes libraries (or test doubles with the same functions);
    ``GpuDriver.load()`` opens the real ones.
    """

    def __init__(self, cuda: Any | None, nvml: Any | None = None, reason: str = "") -> None:
        self._cuda = cuda
        self._nvml = nvml
        self._reason = reason
        self._initialized = False
        if cuda is not None and isinstance(cuda, ctypes.CDLL):
            _declare_cuda(cuda)
        if nvml is not None and isinstance(nvml, ctypes.CDLL):
            _declare_nvml(nvml)

    @classmethod
    def load(cls) -> GpuDriver:
        """Open libcuda (and NVML if present); never raises: see ``available()``."""
        try:
            cuda = ctypes.CDLL(CUDA_LIB)
        except OSError as exc:
            return cls(None, None, f"{CUDA_LIB} cannot be loaded ({exc}); no NVIDIA driver here")
        try:
            nvml: Any | None = ctypes.CDLL(NVML_LIB)
        except OSError:
            nvml = None
        return cls(cuda, nvml)

    # -- capability -----------------------------------------------------------------------

    def _init(self) -> None:
        if self._initialized:
            return
        if self._cuda is None:
            raise GpuError(self._reason)
        missing = [f for f in CHECKPOINT_FUNCTIONS if not hasattr(self._cuda, f)]
        if missing:
            raise GpuError(
                "the NVIDIA driver has no CUDA checkpoint API "
                f"({', '.join(missing)} missing; driver >= 570 needed)"
            )
        self._call("cuInit", 0)
        self._initialized = True

    def available(self) -> bool:
        """True if GPU state can be checkpointed on this node."""
        try:
            self._init()
        except GpuError as exc:
            self._reason = str(exc)
            return False
        return self.device_count() > 0

    def unavailable_reason(self) -> str:
        if self.available():
            return ""
        return self._reason or "no NVIDIA GPU"

    def checkpoint_supported(self) -> bool:
        return self._cuda is not None and all(hasattr(self._cuda, f) for f in CHECKPOINT_FUNCTIONS)

    # -- calls ----------------------------------------------------------------------------

    def _error_string(self, code: int) -> str:
        name = _CUDA_ERROR_NAMES.get(code, f"CUresult {code}")
        text = ctypes.c_char_p()
        with contextlib.suppress(AttributeError):
            if (
                self._cuda is not None
                and self._cuda.cuGetErrorString(code, ctypes.byref(text)) == 0
                and text.value
            ):
                return f"{name}: {text.value.decode(errors='replace')}"
        return name

    def _call(self, fn: str, *args: Any, pid: int | None = None) -> None:
        code = int(getattr(self._cuda, fn)(*args))
        if code == CUDA_SUCCESS:
            return
        what = f"{fn}({pid})" if pid is not None else fn
        msg = f"{what} failed: {self._error_string(code)}"
        if code == CUDA_ERROR_NOT_SUPPORTED and pid is not None:
            msg += (
                " (the CUDA driver cannot checkpoint this process: UVM, CUDA IPC, MIG and MPS"
                " are not supported)"
            )
        elif code == CUDA_ERROR_TIMEOUT:
            msg += " (the process did not reach a lockable point in time: a long-running kernel?)"
        raise GpuError(msg)

    def device_count(self) -> int:
        n = ctypes.c_int(0)
        try:
            self._call("cuDeviceGetCount", ctypes.byref(n))
        except GpuError as exc:
            self._reason = str(exc)
            return 0
        return n.value

    def state(self, pid: int) -> ProcessState:
        self._init()
        st = ctypes.c_int(0)
        self._call("cuCheckpointProcessGetState", pid, ctypes.byref(st), pid=pid)
        return ProcessState(st.value)

    def lock(self, pid: int, timeout_ms: int) -> None:
        self._init()
        args = CUcheckpointLockArgs(timeoutMs=timeout_ms)
        self._call("cuCheckpointProcessLock", pid, ctypes.byref(args), pid=pid)

    def checkpoint(self, pid: int) -> None:
        self._init()
        self._call("cuCheckpointProcessCheckpoint", pid, ctypes.byref(_ReservedArgs()), pid=pid)

    def restore(self, pid: int) -> None:
        self._init()
        self._call("cuCheckpointProcessRestore", pid, ctypes.byref(_ReservedArgs()), pid=pid)

    def unlock(self, pid: int) -> None:
        self._init()
        self._call("cuCheckpointProcessUnlock", pid, ctypes.byref(_ReservedArgs()), pid=pid)

    # -- processes ------------------------------------------------------------------------

    def cuda_pids(self, pids: Iterable[int]) -> list[int]:
        """The pids among ``pids`` that hold a CUDA context: an NVIDIA device open, and the
        driver reports a checkpoint state for them."""
        self._init()
        found: list[int] = []
        for pid in pids:
            if not uses_nvidia_device(pid):
                continue
            try:
                self.state(pid)
            except GpuError as exc:
                log.debug("pid %d has NVIDIA devices open but no CUDA context: %s", pid, exc)
                continue
            found.append(pid)
        return found

    def _suspend(self, pids: list[int], timeout_ms: int, done: list[int]) -> None:
        # Lock every process before checkpointing any, so processes that talk to each other
        # (e.g. over NCCL) are all quiet when the first one gives up its device memory.
        for pid in pids:
            self.lock(pid, timeout_ms)
            done.append(pid)
        for pid in pids:
            self.checkpoint(pid)

    async def suspend(self, pids: list[int], timeout_ms: int, *, done: list[int]) -> None:
        """Lock then checkpoint ``pids``; every pid locked is appended to ``done`` so a caller
        can ``resume`` exactly those after a failure or cancellation."""
        await asyncio.to_thread(self._suspend, pids, timeout_ms, done)

    def _resume(self, pids: list[int]) -> list[int]:
        resumed: list[int] = []
        errors: list[str] = []
        for pid in pids:
            try:
                st = self.state(pid)
                if st == ProcessState.CHECKPOINTED:
                    self.restore(pid)
                    st = self.state(pid)
                if st == ProcessState.LOCKED:
                    self.unlock(pid)
                    resumed.append(pid)
            except GpuError as exc:
                errors.append(str(exc))
        if errors:
            raise GpuError("; ".join(errors))
        return resumed

    async def resume(self, pids: list[int]) -> list[int]:
        """Restore (if checkpointed) and unlock (if locked) each pid; returns those resumed."""
        return await asyncio.to_thread(self._resume, pids)

    async def resume_checkpointed(self, pids: list[int]) -> list[int]:
        """After a CRIU restore: resume the processes the driver reports as checkpointed or
        locked (their device files were closed by the checkpoint, so they are found by state,
        not by open files)."""

        def work() -> list[int]:
            self._init()
            targets: list[int] = []
            for pid in pids:
                try:
                    st = self.state(pid)
                except GpuError:
                    continue  # not a CUDA process
                if st in (ProcessState.CHECKPOINTED, ProcessState.LOCKED):
                    targets.append(pid)
            return self._resume(targets)

        return await asyncio.to_thread(work)

    # -- inventory ------------------------------------------------------------------------

    def _nvml_ready(self) -> Any | None:
        """NVML, initialised; None without it (or when it fails to start)."""
        if self._nvml is None:
            return None
        try:
            return self._nvml if int(self._nvml.nvmlInit_v2()) == 0 else None
        except AttributeError:
            return None

    def models(self) -> list[str]:
        """GPU model names, one per device (NVML, else the CUDA driver)."""
        names: list[str] = []
        nvml = self._nvml_ready()
        if nvml is not None:
            count = ctypes.c_uint(0)
            if int(nvml.nvmlDeviceGetCount_v2(ctypes.byref(count))) == 0:
                for i in range(count.value):
                    handle = ctypes.c_void_p()
                    buf = ctypes.create_string_buffer(96)
                    if int(nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle))):
                        continue
                    if int(nvml.nvmlDeviceGetName(handle, buf, len(buf))) == 0:
                        names.append(buf.value.decode(errors="replace"))
            if names:
                return names
        self._init()
        for i in range(self.device_count()):
            dev = ctypes.c_int(0)
            buf = ctypes.create_string_buffer(256)
            self._call("cuDeviceGet", ctypes.byref(dev), i)
            self._call("cuDeviceGetName", buf, len(buf), dev)
            names.append(buf.value.decode(errors="replace"))
        return names

    def driver_version(self) -> str | None:
        """The NVIDIA driver version (NVML, e.g. "580.65.06"), else the CUDA driver API
        version (e.g. "CUDA 12.9"); None without a driver."""
        nvml = self._nvml_ready()
        if nvml is not None:
            buf = ctypes.create_string_buffer(96)
            if int(nvml.nvmlSystemGetDriverVersion(buf, len(buf))) == 0:
                return buf.value.decode(errors="replace")
        if self._cuda is None:
            return None
        v = ctypes.c_int(0)
        try:
            self._call("cuDriverGetVersion", ctypes.byref(v))
        except GpuError:
            return None
        return f"CUDA {v.value // 1000}.{(v.value % 1000) // 10}"


def uses_nvidia_device(pid: int) -> bool:
    """True if the process has an NVIDIA device file open (/dev/nvidia0, nvidiactl, ...)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if _NVIDIA_DEVICE.match(target):
            return True
    return False


def _declare_cuda(lib: ctypes.CDLL) -> None:
    """Argument types, so ctypes passes ints and pointers at the right width."""
    i, p = ctypes.c_int, ctypes.c_void_p
    sig: dict[str, list[Any]] = {
        "cuInit": [ctypes.c_uint],
        "cuGetErrorString": [i, ctypes.POINTER(ctypes.c_char_p)],
        "cuDriverGetVersion": [ctypes.POINTER(i)],
        "cuDeviceGetCount": [ctypes.POINTER(i)],
        "cuDeviceGet": [ctypes.POINTER(i), i],
        "cuDeviceGetName": [ctypes.c_char_p, i, i],
        "cuCheckpointProcessGetState": [i, ctypes.POINTER(i)],
        "cuCheckpointProcessLock": [i, p],
        "cuCheckpointProcessCheckpoint": [i, p],
        "cuCheckpointProcessRestore": [i, p],
        "cuCheckpointProcessUnlock": [i, p],
    }
    for name, argtypes in sig.items():
        if hasattr(lib, name):
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int


def _declare_nvml(lib: ctypes.CDLL) -> None:
    u, p = ctypes.c_uint, ctypes.c_void_p
    sig: dict[str, list[Any]] = {
        "nvmlInit_v2": [],
        "nvmlSystemGetDriverVersion": [ctypes.c_char_p, u],
        "nvmlDeviceGetCount_v2": [ctypes.POINTER(u)],
        "nvmlDeviceGetHandleByIndex_v2": [u, ctypes.POINTER(p)],
        "nvmlDeviceGetName": [p, ctypes.c_char_p, u],
    }
    for name, argtypes in sig.items():
        if hasattr(lib, name):
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
