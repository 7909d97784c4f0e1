"""Collate the next optimizer steps' micro-batches while the current one computes.

Issue 8 (Scale) and issue 15 benchmark 4: the loop used to build each batch (Python lists to
tensors, then a blocking copy to the device) between two steps, with the accelerator idle.
A background thread now collates up to `depth` steps ahead, into pinned memory on CUDA so
the copy to the device is asynchronous (`non_blocking=True`); the loop only takes the next
ready step and records how long it waited (`waited`, the data-wait share of step time).

Not a `torch.utils.data.DataLoader`: the batches come from a plan that is a pure function
of (seed, epoch, world size) (batching.py) and a resumed run starts it at the step the
checkpoint recorded; a thread keeps that exact (two integers in the checkpoint), where
DataLoader workers would have to be fast-forwarded. Collation is a few small tensor builds,
so one thread suffices and no process copies the dataset.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator

Items = list[list[dict[str, Any]]]  # one optimizer step: this rank's micro-batches of examples
_DONE = object()


class StepPrefetcher:
    """Iterates (micro-batches, collated tensors) for each step of `steps`, prepared `depth` steps ahead."""

    def __init__(self, steps: Iterable[Items], collate: Callable[[list[dict[str, Any]]], Any], depth: int = 2):
        self._steps, self._collate = steps, collate
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.waited = 0.0  # seconds the loop spent waiting for a batch
        self.first_wait: float | None = None  # of which for the first batch (the rest is the steady state)
        self._thread = threading.Thread(target=self._fill, name="tuneloop-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for items in self._steps:
                ready = (items, [self._collate(micro) for micro in items])
                while not self._stop.is_set():
                    try:
                        self._queue.put(ready, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_final(_DONE)
        except BaseException as e:  # noqa: BLE001 - re-raised in the training loop's thread
            self._put_final(e)

    def _put_final(self, value: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[Items, list[Any]]]:
        while True:
            started = time.perf_counter()
            value = self._queue.get()
            waited = time.perf_counter() - started
            self.waited += waited
            self.first_wait = waited if self.first_wait is None else self.first_wait
            if value is _DONE:
                return
            if isinstance(value, BaseException):
                raise value
            yield value

    def close(self) -> None:
        """Stop preparing batches (early stop, SIGTERM, an error) and let the thread end."""
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "StepPrefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
