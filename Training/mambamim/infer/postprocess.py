"""Label-map post-processing: keep the largest connected component of each organ."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

# 26-connectivity: voxels touching by a corner belong to the same organ (MONAI's default too).
_FULL_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)


def keep_largest_component(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Copy of ``labels`` where every value in ``values`` keeps only its largest component (rest -> 0)."""
    out = labels.copy()
    for value in values:
        mask = labels == value
        # Work inside the organ's bounding box: cheap for small organs in large volumes.
        boxes = ndimage.find_objects(mask.astype(np.uint8))
        if not boxes or boxes[0] is None:
            continue
        box = boxes[0]
        components, count = ndimage.label(mask[box], structure=_FULL_CONNECTIVITY)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        region = out[box]
        region[(components != 0) & (components != int(sizes.argmax()))] = 0
    return out
