"""A CUDA process for the GPU check: holds a known pattern in GPU memory and keeps counting.

Driver API through ctypes (no toolkit needed): allocates --mib MiB on GPU 0, fills every
1 MiB block with a deterministic pattern (a 1 MiB block derived from sha256, tagged with the
block index), then loops: bumps a counter in <state>/counter every 0.1 s, touching the GPU each
time (a memset of a scratch buffer + synchronize). On SIGUSR1 it copies the pattern back and
writes "OK <counter>" or "BAD <block>" to <state>/verify. Stdio is /dev/null.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import signal
import time
from pathlib import Path

MIB = 1 << 20


def block(i: int, base: bytes) -> bytes:
    return i.to_bytes(8, "little") + base[8:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--state", type=Path, required=True)
    a = ap.parse_args()
    cu = ctypes.CDLL("libcuda.so.1")

    def check(code: int, what: str) -> None:
        if code != 0:
            raise SystemExit(f"{what} failed: CUresult {code}")

    check(cu.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    check(cu.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    cu.cuDevicePrimaryCtxRetain.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    check(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    cu.cuCtxSetCurrent.argtypes = [ctypes.c_void_p]
    check(cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

    ptr = ctypes.c_uint64()
    scratch = ctypes.c_uint64()
    cu.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
    check(cu.cuMemAlloc_v2(ctypes.byref(ptr), a.mib * MIB), "cuMemAlloc")
    check(cu.cuMemAlloc_v2(ctypes.byref(scratch), MIB), "cuMemAlloc scratch")
    cu.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t]
    cu.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
    cu.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]

    base = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(MIB // 32))
    for i in range(a.mib):
        check(cu.cuMemcpyHtoD_v2(ptr.value + i * MIB, block(i, base), MIB), "cuMemcpyHtoD")
    check(cu.cuCtxSynchronize(), "cuCtxSynchronize")

    counter = 0

    def verify(signum: int, frame: object) -> None:
        buf = ctypes.create_string_buffer(MIB)
        for i in range(a.mib):
            if cu.cuMemcpyDtoH_v2(buf, ptr.value + i * MIB, MIB) != 0 or buf.raw != block(i, base):
                (a.state / "verify").write_text(f"BAD {i}\n")
                return
        (a.state / "verify").write_text(f"OK {counter}\n")

    signal.signal(signal.SIGUSR1, verify)
    (a.state / "ready").write_text("1\n")
    while True:
        counter += 1
        check(cu.cuMemsetD8_v2(scratch.value, counter & 0xFF, MIB), "cuMemsetD8")
        check(cu.cuCtxSynchronize(), "cuCtxSynchronize")
        (a.state / "counter").write_text(f"{counter}\n")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
