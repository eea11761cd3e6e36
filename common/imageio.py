"""Image file reading shared by the bundles: one place that turns a bad file into a clear error."""

from __future__ import annotations

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
