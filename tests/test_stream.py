"""Overlap helpers: prefetch order, the post-processing pool (threads and spawned processes), batch padding."""

from __future__ import annotations

import time

import numpy as np
import pytest

from common.stream import PostPool, pad_batch, prefetched_batches


def slow_square(x: int) -> int:
    time.sleep(0.01 * (5 - x % 5))  # later jobs finish first: order must still be submission order
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("job 3 failed")
    return x


def test_prefetched_batches_keep_order_and_sizes():
    seen = list(prefetched_batches(10, lambda i: i * 10, 4, workers=3))
    assert [list(idx) for idx, _ in seen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [items for _, items in seen] == [[0, 10, 20, 30], [40, 50, 60, 70], [80, 90]]


@pytest.mark.parametrize("workers", [1, 3])  # 1: a thread; 3: spawned processes
def test_post_pool_returns_results_in_submission_order(workers):
    pool: PostPool[int] = PostPool(workers)
    for x in range(12):
        pool.submit(slow_square, x)
    assert pool.drain() == [x * x for x in range(12)]


@pytest.mark.parametrize("workers", [1, 2])
def test_post_pool_reraises_job_errors(workers):
    pool: PostPool[int] = PostPool(workers)
    for x in range(5):
        pool.submit(fail_on_three, x)
    with pytest.raises(ValueError, match="job 3 failed"):
        pool.drain()


def test_pad_batch_pads_only_short_batches():
    b = np.ones((3, 2, 2), np.float32)
    padded = pad_batch(b, 5)
    assert padded.shape == (5, 2, 2) and padded[:3].all() and not padded[3:].any()
    assert pad_batch(b, 3) is b
