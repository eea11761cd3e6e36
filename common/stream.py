"""Overlap data loading and post-processing with inference, so pre/post never bottleneck the backend.

Loading runs ahead in a small thread pool (cv2 and numpy release the GIL); post-processing runs in one
background thread so results are handled in order while the backend computes the next batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def prefetched_batches(n_items: int, load: Callable[[int], T], batch_size: int, *, workers: int = 2,
                       lookahead_batches: int = 2) -> Iterator[tuple[range, list[T]]]:
    """Yield (indices, loaded items) batches in order while later items load in the background."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoo-load") as pool:
        pending: deque[Future[T]] = deque()
        next_index = 0
        limit = batch_size * (lookahead_batches + 1)
        for start in range(0, n_items, batch_size):
            while next_index < n_items and len(pending) < limit:
                pending.append(pool.submit(load, next_index))
                next_index += 1
            idx = range(start, min(start + batch_size, n_items))
            yield idx, [pending.popleft().result() for _ in idx]


class OrderedWorker:
    """One background thread running submitted jobs in order; `drain()` waits and re-raises the first error."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-post")
        self._futures: list[Future[None]] = []

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        self._futures.append(self._pool.submit(fn, *args))
        # keep the queue short: bound memory held by pending raw outputs
        while len(self._futures) > 4:
            self._futures.pop(0).result()

    def drain(self) -> None:
        try:
            for f in self._futures:
                f.result()
        finally:
            self._futures.clear()
            self._pool.shutdown(wait=True)


def pad_batch(batch: np.ndarray, batch_size: int) -> np.ndarray:
    """Zero-pad the last, short batch to `batch_size` along axis 0 (the caller drops the padded outputs), as
    ais_bench does: a static-batch OM accepts no other size."""
    if len(batch) >= batch_size:
        return batch
    return np.concatenate([batch, np.zeros((batch_size - len(batch), *batch.shape[1:]), batch.dtype)])
