"""In-memory pipes between threads, for streams that run in stages.

Reading an archive decrypts, decompresses, hashes and writes; each of these (ChaCha20, zstd,
sha256 on large buffers, file writes) releases the GIL, so stages in threads of their own run
on separate cores. A short queue of chunks between two stages bounds the memory in flight.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
from typing import Any

QUEUE_CHUNKS = 8


class Aborted(Exception):
    """The other side gave up; ends the work of a producing thread."""


class QueueReader(io.RawIOBase):
    """The read end of a pipe: chunks (or an exception to raise, or None at the end) put by
    one thread, read by another."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUE_CHUNKS)
        self._buf = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            if self._eof:
                return 0
            item = self.chunks.get()
            if item is None:
                self._eof = True
                return 0
            if isinstance(item, BaseException):
                raise item
            self._buf = memoryview(item)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def discard_until_stopped(self, thread: threading.Thread) -> None:
        """Takes chunks until `thread` (the producer, told to stop) has ended: a producer
        blocked on the full queue would never see its stop flag otherwise."""
        while thread.is_alive():
            try:
                self.chunks.get(timeout=0.1)
            except queue.Empty:
                continue
        thread.join()


class QueueSink(io.RawIOBase):
    """The write end of a pipe; raises Aborted once `stop` is set."""

    def __init__(self, pipe: QueueReader, stop: threading.Event) -> None:
        self._pipe = pipe
        self._stop = stop

    def writable(self) -> bool:
        return True

    def put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._pipe.chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise Aborted()

    def write(self, data: Any) -> int:
        chunk = bytes(data)  # a copy: callers reuse their buffers
        if chunk:
            self.put(chunk)
        return len(chunk)


class ThreadedReader(io.RawIOBase):
    """The read end of a pipe whose producer, `produce`, runs in a thread of its own. A
    failure of the producer is raised in the reading thread (as `failure` maps it). `close`
    stops the thread (always call it: the producer's source is not safe to touch until it
    returns)."""

    def __init__(self, name: str) -> None:
        self._pipe = QueueReader()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def produce(self, sink: QueueSink) -> None:
        raise NotImplementedError

    def failure(self, exc: BaseException) -> BaseException:
        return exc

    def _run(self) -> None:
        sink = QueueSink(self._pipe, self._stop)
        try:
            self.produce(sink)
            sink.put(None)
        except Aborted:
            return
        except BaseException as exc:  # raised in the reading thread by readinto
            with contextlib.suppress(Aborted):
                sink.put(self.failure(exc))

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self._pipe.readinto(b)

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._pipe.discard_until_stopped(self._thread)
        super().close()


class ReadAhead(ThreadedReader):
    """Reads `src` in a thread of its own, `chunk` bytes at a time, a few chunks ahead of the
    reader."""

    def __init__(self, src: Any, chunk: int, name: str = "read-ahead") -> None:
        self._src = src
        self._chunk = chunk
        super().__init__(name)

    def produce(self, sink: QueueSink) -> None:
        while data := self._src.read(self._chunk):
            sink.put(data)
