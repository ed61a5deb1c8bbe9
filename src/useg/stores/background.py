"""Store writes on a background thread: the caller computes batch b + 1 while batch b is encoded
and written. A bounded queue caps the batches held in memory; an error in the writer is raised
again in the caller (at its next `submit` or at the end of the block), and the store writer's own
atomic exit then removes the unfinished store, so a store still appears only when complete.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

import torch

_STOP = object()  # the caller's last item: the writer thread ends after it


class BackgroundWriter:
    """Runs `write(*args, **kwargs)` for every `submit` in order on one thread, at most `depth` pending."""

    def __init__(self, write: Callable[..., None], depth: int = 2) -> None:
        self.write, self.pending = write, queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    def __enter__(self) -> BackgroundWriter:
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


def stream_to_store(
    batches: Iterable[tuple[int, Any]],
    compute: Callable[[int, Any], dict[str, Any]],
    write: Callable[..., None],
    background: bool = True,
    depth: int = 2,
) -> None:
    """For each (start row, input) run `compute(start, input)` on the caller's thread and `write(start, **arrays)`
    on a background thread (`background`, at most `depth` batches pending) or here, so that the model computes
    batch b + 1 while batch b is copied to the host, encoded and written."""
    if not background:
        for start, inputs in batches:
            write(start, **numpy_arrays(*host_arrays(compute(start, inputs))))
        return

    def write_batch(start: int, moved: dict[str, Any], event: Any) -> None:
        write(start, **numpy_arrays(moved, event))

    with BackgroundWriter(write_batch, depth) as writer:
        for start, inputs in batches:
            writer.submit(start, *host_arrays(compute(start, inputs)))
