"""Label-map post-processing: keep the largest connected component of each organ.

MONAI's ``KeepLargestConnectedComponent`` does the work (``independent=True``: each organ on its own,
full 26-connectivity: voxels touching by a corner belong to the same organ); removed voxels become
background (0). It labels components with scikit-image.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from monai.transforms import KeepLargestConnectedComponent


def keep_largest_component(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Copy of ``labels`` where every value in ``values`` keeps only its largest component (rest -> 0)."""
    present = [int(v) for v in values if np.any(labels == v)]
    if not present:
        return labels.copy()
    transform = KeepLargestConnectedComponent(applied_labels=present, is_onehot=False, independent=True)
    return np.asarray(transform(labels[None]))[0].astype(labels.dtype, copy=False)
