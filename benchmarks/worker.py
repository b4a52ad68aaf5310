"""Worker processes that attach to a peer's store by name and run the timed loops themselves.

The workers are started once, with the ``spawn`` context, before any store exists, so process
start-up is never timed. The parent sends commands over a pipe:

``("attach", rid, reader_cls, handle)``
    attach and keep the reader under id ``rid``; returns the attach time in seconds;
``("call", function_name, rid, kwargs)``
    run ``benchmarks.workloads.<function_name>(reader, **kwargs)`` and return its result
    (``kwargs["use_barrier"]`` is replaced by the barrier shared by all workers);
``("close", rid)``, ``("ping",)`` (returns once the worker is ready), ``("exit",)``.

Errors come back as the worker's traceback and are raised in the parent as :class:`WorkerError`.
:class:`LocalRunner` offers the same interface in-process, so the benchmark driver treats both
kinds of peer alike.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from typing import Any

from benchmarks import workloads
from benchmarks.peers import Peer, Reader

__all__ = ["LocalRunner", "Worker", "WorkerError", "WorkerPool", "worker_main"]


class WorkerError(RuntimeError):
    """A command failed in a worker; the message is the worker's traceback."""


def worker_main(conn: Any, barrier: Any, batch_queue: Any = None) -> None:
    """Serve commands from the parent until ``("exit",)`` or end of file.

    Parameters
    ----------
    conn : multiprocessing.connection.Connection
        This worker's end of the pipe.
    barrier : multiprocessing.Barrier
        Shared by all workers, for the workloads whose processes start together (c, i, j, l).
    batch_queue : multiprocessing.Queue, optional
        The batch queue of workload (l)'s Queue peer (a queue travels only by inheritance).
    """
    from benchmarks import loader

    loader.WORKER_QUEUE = batch_queue
    readers: dict[Any, Reader] = {}
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                break
            cmd = msg[0]
            if cmd == "exit":
                break
            try:
                if cmd == "ping":
                    result = None
                elif cmd == "attach":
                    _, rid, reader_cls, handle = msg
                    t0 = time.perf_counter()
                    readers[rid] = reader_cls.attach(handle)
                    result: Any = time.perf_counter() - t0
                elif cmd == "call":
                    _, fname, rid, kwargs = msg
                    if kwargs.pop("use_barrier", False):
                        kwargs["barrier"] = barrier
                    result = getattr(workloads, fname)(readers.get(rid), **kwargs)
                elif cmd == "close":
                    r = readers.pop(msg[1], None)
                    if r is not None:
                        r.close()
                    result = None
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                conn.send(("ok", result))
            except NotImplementedError:
                conn.send(("notimpl", traceback.format_exc()))
            except BaseException:
                conn.send(("error", traceback.format_exc()))
    finally:
        for r in readers.values():
            try:
                r.close()
            except Exception:
                pass


class Worker:
    """Parent-side handle of one worker process.

    Parameters
    ----------
    ctx : multiprocessing context
        The spawn context.
    barrier : multiprocessing.Barrier
        Shared by the workers of one pool.
    batch_queue : multiprocessing.Queue, optional
        Shared by the workers of one pool, for workload (l).
    """

    cross_process = True

    def __init__(self, ctx: Any, barrier: Any, batch_queue: Any = None) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=worker_main,
            args=(child, barrier, batch_queue),
            daemon=True,
            name="szbench-worker",
        )
        self.proc.start()
        child.close()

    def send(self, *msg: Any) -> None:
        """Send a command without waiting for its result."""
        self.conn.send(msg)

    def result(self, timeout: float = 600.0) -> Any:
        """Wait for the result of the last command sent.

        Raises
        ------
        WorkerError
            If the command failed or the worker died.
        """
        if not self.conn.poll(timeout):
            raise WorkerError(f"worker gave no answer in {timeout:.0f} s")
        try:
            status, payload = self.conn.recv()
        except EOFError:
            raise WorkerError(f"worker died (exit code {self.proc.exitcode})") from None
        if status == "notimpl":
            raise NotImplementedError(payload)
        if status == "error":
            raise WorkerError(payload)
        return payload

    def request(self, *msg: Any) -> Any:
        """Send a command and return its result."""
        self.send(*msg)
        return self.result()

    def attach(self, rid: Any, peer: Peer | Any, handle: Any = None) -> float:
        """Attach reader ``rid`` to ``peer``'s store (``handle`` defaults to the peer's)."""
        handle = peer.handle() if handle is None else handle
        return self.request("attach", rid, peer.reader_cls, handle)

    def call(self, fname: str, rid: Any, **kwargs: Any) -> Any:
        """Run ``workloads.<fname>`` on reader ``rid``."""
        return self.request("call", fname, rid, kwargs)

    def close(self, rid: Any) -> None:
        """Close reader ``rid`` (ignores a dead worker)."""
        if self.alive():
            self.request("close", rid)

    def alive(self) -> bool:
        """True while the worker process runs."""
        return self.proc.is_alive()

    def stop(self) -> None:
        """Ask the worker to exit; terminate it if it does not."""
        if self.proc.is_alive():
            try:
                self.conn.send(("exit",))
            except OSError:
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


class WorkerPool:
    """Two workers sharing a barrier (two readers are what 2 cores allow) and a batch queue.

    Parameters
    ----------
    n : int
        Number of workers.
    batch_rows : int
        Rows per batch that the Queue peer of workload (l) produces.
    """

    def __init__(self, n: int = 2, batch_rows: int = 64) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.n = n
        self.batch_rows = batch_rows
        self._start()

    def _start(self) -> None:
        self.barrier = self.ctx.Barrier(self.n)
        self.queue = self.ctx.Queue(maxsize=4 * self.n)
        self.workers = [Worker(self.ctx, self.barrier, self.queue) for _ in range(self.n)]
        for w in self.workers:  # wait until each worker has imported everything
            w.request("ping")

    def ensure_alive(self) -> None:
        """Restart the pool if a worker died (after a failed peer)."""
        if not all(w.alive() for w in self.workers):
            self.stop()
            self._start()

    def stop(self) -> None:
        """Stop every worker and close the batch queue."""
        for w in self.workers:
            w.stop()
        self.queue.close()
        self.queue.join_thread()


class LocalRunner:
    """The :class:`Worker` interface, run in this process (in-process peers)."""

    cross_process = False

    def __init__(self) -> None:
        self.readers: dict[Any, Reader] = {}

    def attach(self, rid: Any, peer: Peer | Any, handle: Any = None) -> float:
        """Take the peer's local reader."""
        t0 = time.perf_counter()
        if handle is not None:
            self.readers[rid] = peer.reader_cls.attach(handle)
        else:
            self.readers[rid] = peer.local_reader()
        return time.perf_counter() - t0

    def call(self, fname: str, rid: Any, **kwargs: Any) -> Any:
        """Run ``workloads.<fname>`` on reader ``rid``."""
        kwargs.pop("use_barrier", None)
        return getattr(workloads, fname)(self.readers.get(rid), **kwargs)

    def close(self, rid: Any) -> None:
        """Close reader ``rid``."""
        r = self.readers.pop(rid, None)
        if r is not None:
            r.close()
