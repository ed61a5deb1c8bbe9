"""Matching predicted clusters to ground-truth classes from a confusion matrix."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def hungarian_match(confusion: np.ndarray) -> np.ndarray:
    """One-to-one matching maximising matched pixels.

    `confusion[c, k]` counts pixels of class c predicted as cluster k. Returns, for every cluster
    k, its class or -1 when the cluster is left unmatched (K > C).
    """
    classes, clusters = linear_sum_assignment(confusion, maximize=True)
    mapping = np.full(confusion.shape[1], -1, np.int64)
    mapping[clusters] = classes
    return mapping


def many_to_one_match(confusion: np.ndarray) -> np.ndarray:
    """Each cluster to the class it overlaps most (over-clustering protocol)."""
    return confusion.argmax(axis=0).astype(np.int64)
