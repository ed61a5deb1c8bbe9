"""Store writes beside the model: the caller computes batch b + 1 while batch b is copied to the host,
encoded and written. On Linux the writes run in a forked child process (`ProcessWriter`), so the
encoding and the store library's Python code never hold the caller's interpreter lock while it drives
the model; where fork is not the safe default (macOS, Windows) they run on a thread (`ThreadWriter`).
A bounded queue caps the batches held in memory; an error in the writer is raised again in the caller
(at its next `submit` or at the end of the block), and the store writer's own atomic exit then
removes the unfinished store, so a store still appears only when complete.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch

Background = Literal["process", "thread", "none"]
_STOP = None  # the caller's last item: the writer ends after it
_POLL_S = 1.0  # how often a blocked writer process checks that its parent still lives


def default_background() -> Background:
    """A writer process where the platform forks safely (Linux), else a writer thread."""
    return "process" if sys.platform.startswith("linux") else "thread"


class ThreadWriter:
    """Runs `write(*args, **kwargs)` for every `submit` in order on one thread, at most `depth` pending."""

    def __init__(self, write: Callable[..., None], depth: int = 2) -> None:
        self.write, self.pending = write, queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    def __enter__(self) -> ThreadWriter:
        self.thread.start()
        return self

    def _run(self) -> None:
        """Write the queued items in order; after an error only drain the queue, so no caller blocks."""
        while (item := self.pending.get()) is not _STOP:
            if self.error is None:
                try:
                    args, kwargs = item
                    self.write(*args, **kwargs)
                except BaseException as error:  # handed to the caller, which raises it
                    self.error = error

    def _raise_error(self) -> None:
        """Raise the writer thread's error in the caller, with its own type and traceback."""
        if self.error is not None:
            raise self.error

    def submit(self, *args: Any, **kwargs: Any) -> None:
        """Queue one write (blocks while `depth` writes are pending); raises an earlier write's error."""
        self._raise_error()
        self.pending.put((args, kwargs))

    def __exit__(self, exc_type: Any, exc: BaseException | None, *_: Any) -> None:
        if exc is not None and self.error is None:
            self.error = exc  # the caller failed: the pending writes are dropped, not made
        self.pending.put(_STOP)
        self.thread.join()
        if exc is None:
            self._raise_error()


def _serve(write: Callable[..., None], items: Any, errors: Any, parent: int) -> None:
    """The writer process: write the queued items in order until the caller's stop; after an error hand
    it to the caller and write nothing more; end if the caller died. SIGTERM and SIGINT end it whatever
    handlers the caller had installed (the fork inherits them)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    failed = False
    while True:
        try:
            item = items.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if item is _STOP:
            return
        if failed:
            continue
        try:
            args, kwargs = item
            write(*args, **kwargs)
        except BaseException as error:  # handed to the caller, which raises it
            failed = True
            error.add_note("in the store writer process:\n" + "".join(traceback.format_exception(error)))
            errors.put(error)


class ProcessWriter:
    """Runs `write(*args, **kwargs)` for every `submit` in order in a forked child process, at most `depth`
    pending. The child inherits `write` and the open store it writes to; the arguments travel pickled
    (numpy arrays). `write` must keep no state of its own: what it changes in the child stays there."""

    def __init__(self, write: Callable[..., None], depth: int = 2) -> None:
        context = multiprocessing.get_context("fork")
        self.items, self.errors = context.Queue(maxsize=max(1, depth)), context.SimpleQueue()
        self.process = context.Process(target=_serve, args=(write, self.items, self.errors, os.getpid()), name="store-writer", daemon=True)

    def __enter__(self) -> ProcessWriter:
        self.process.start()
        return self

    def _raise_error(self) -> None:
        """Raise the writer process's error in the caller, with its own type; its traceback is in a note."""
        if not self.errors.empty():
            raise self.errors.get()
        if not self.process.is_alive() and self.process.exitcode not in (0, None):
            raise RuntimeError(f"the store writer process ended with exit code {self.process.exitcode} (killed, out of memory?)")

    def _put(self, item: Any) -> None:
        """Queue `item`, waiting while `depth` items are pending; raises the writer's error instead if it has one."""
        while True:
            self._raise_error()
            try:
                self.items.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def submit(self, *args: Any, **kwargs: Any) -> None:
        """Queue one write (blocks while `depth` writes are pending); raises an earlier write's error."""
        self._put((args, kwargs))

    def __exit__(self, exc_type: Any, exc: BaseException | None, *_: Any) -> None:
        try:
            if exc is None:
                self._put(_STOP)
                self.process.join()
                self.items.close()
                self._raise_error()
        finally:
            if self.process.is_alive():
                self.process.kill()  # the caller or the writer failed: the pending writes are dropped, not made
            self.process.join()


def host_arrays(result: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Start copying a batch's tensors to the host without blocking; the CUDA event marks the end of the copies."""
    moved = {name: value.to("cpu", non_blocking=True) if isinstance(value, torch.Tensor) else value for name, value in result.items()}
    cuda = any(isinstance(value, torch.Tensor) and value.is_cuda for value in result.values())
    event = torch.cuda.Event() if cuda else None
    if event is not None:
        event.record()
    return moved, event


def numpy_arrays(moved: dict[str, Any], event: Any) -> dict[str, Any]:
    """The batch as numpy arrays, once its copies to the host (if any) are done."""
    if event is not None:
        event.synchronize()
    return {name: value.numpy() if isinstance(value, torch.Tensor) else value for name, value in moved.items()}


WRITERS = {"process": ProcessWriter, "thread": ThreadWriter}


def stream_to_store(
    batches: Iterable[tuple[int, Any]],
    compute: Callable[[int, Any], dict[str, Any]],
    write: Callable[..., None],
    background: Background | None = None,
    depth: int = 2,
) -> None:
    """For each (start row, input) run `compute(start, input)` here and `write(start, **arrays)` in a writer
    process or thread (`background`, default `default_background()`; at most `depth` batches pending) or
    here (`none`). A batch is handed over once the next one is computed, so its copy to the host overlaps
    the next forward on CUDA."""
    background = background or default_background()
    if background == "none":
        for start, inputs in batches:
            write(start, **numpy_arrays(*host_arrays(compute(start, inputs))))
        return
    with WRITERS[background](write, depth) as writer:
        lagging: tuple[int, dict[str, Any], Any] | None = None
        for start, inputs in batches:
            current = (start, *host_arrays(compute(start, inputs)))
            if lagging is not None:
                writer.submit(lagging[0], **numpy_arrays(*lagging[1:]))
            lagging = current
        if lagging is not None:
            writer.submit(lagging[0], **numpy_arrays(*lagging[1:]))
