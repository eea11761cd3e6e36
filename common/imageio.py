"""Image file reading shared by the bundles: one place that turns a bad file into a clear error."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from common.errors import InputError


def load_image_bgr(path: Path) -> np.ndarray:
    """Read an image as BGR uint8 (H, W, 3); a missing or undecodable file raises InputError naming it."""
    if not path.is_file():
        raise InputError(path, "image file missing")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(path, "cannot decode image (corrupt or not an image)")
    return image


_cv2_single_thread_pid: int | None = None


def single_thread_cv2() -> None:
    """Run OpenCV single-threaded in every process that loads training pairs, the main process included, before
    its first OpenCV call. Two reasons: DataLoader workers are the parallelism (nested pools only oversubscribe
    the cores), and a process whose OpenCV thread pool has started cannot safely fork: a DataLoader worker forked
    after the parent decoded one pair deadlocks in its first OpenCV call (seen here with OpenCV 5.0). Cheap after
    the first call in a process (a pid comparison)."""
    global _cv2_single_thread_pid
    pid = os.getpid()
    if _cv2_single_thread_pid != pid:
        cv2.setNumThreads(1)
        _cv2_single_thread_pid = pid
