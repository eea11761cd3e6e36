"""Overlap data loading and post-processing with inference, so pre/post never bottleneck the backend.

Loading runs ahead in a thread pool (cv2 and numpy release the GIL) and post-processing in a worker pool, each
sized to the machine: on a 2-core CPU box one thread each, on a GPU/NPU server up to 8, because there the backend
outpaces a single post-processing thread (RefineDet on an H100: 300 fps pure inference, 13 fps with one thread).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


def prefetched_batches(n_items: int, load: Callable[[int], T], batch_size: int, *, workers: int | None = None,
                       lookahead_batches: int = 2) -> Iterator[tuple[range, list[T]]]:
    """Yield (indices, loaded items) batches in order while later items load in the background."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="zoo-load") as pool:
        pending: deque[Future[T]] = deque()
        next_index = 0
        limit = batch_size * (lookahead_batches + 1)
        for start in range(0, n_items, batch_size):
            while next_index < n_items and len(pending) < limit:
                pending.append(pool.submit(load, next_index))
                next_index += 1
            idx = range(start, min(start + batch_size, n_items))
            yield idx, [pending.popleft().result() for _ in idx]


def default_workers() -> int:
    """Workers for loading or post-processing: $ZOO_WORKERS, else every core but one for the backend, 1 to 8."""
    if os.environ.get("ZOO_WORKERS", "").isdigit() and int(os.environ["ZOO_WORKERS"]) > 0:
        return int(os.environ["ZOO_WORKERS"])
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class PostPool(Generic[R]):
    """Post-processing jobs in the background while the backend computes the next batch; `drain()` returns the
    jobs' results in submission order and re-raises the first error.

    With more than one worker the jobs run in spawned processes: post-processing such as per-class NMS is many
    small numpy calls that hold the GIL, so threads do not scale (measured on a 16-core H100 host: one thread or
    eight, RefineDet stayed at 10-19 images/s). With one worker (a 2-core box) a thread avoids process start-up.
    Jobs must be module-level functions of picklable arguments. Pending jobs are bounded."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self._pool: Executor = (
            ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            if self.workers > 1 else ThreadPoolExecutor(1, thread_name_prefix="zoo-post"))
        self._pending: deque[Future[R]] = deque()
        self._results: list[R] = []

    def submit(self, fn: Callable[..., R], *args: object) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > 2 * self.workers:
            self._results.append(self._pending.popleft().result())

    def drain(self) -> list[R]:
        try:
            while self._pending:
                self._results.append(self._pending.popleft().result())
            return self._results
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def pad_batch(batch: np.ndarray, batch_size: int) -> np.ndarray:
    """Zero-pad the last, short batch to `batch_size` along axis 0 (the caller drops the padded outputs), as
    ais_bench does: a static-batch OM accepts no other size."""
    if len(batch) >= batch_size:
        return batch
    return np.concatenate([batch, np.zeros((batch_size - len(batch), *batch.shape[1:]), batch.dtype)])
