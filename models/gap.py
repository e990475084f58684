"""GAP (global average precision), the Kaggle landmark-recognition metric, from each image's
top-class confidence and whether that class is right: what training's validation (--monitor=
val_gap) and evaluation's metrics.json both compute, so it lives beside the models they share.
Numpy only."""
import numpy as np


def global_average_precision(confidence, right):
    """All images ranked by confidence (ties in the given order); the sum of the precision at
    each rank whose prediction is right, over the number of images:

        GAP = 1/N * sum_i P(i) rel(i)

    P(i) the share right among the i most confident, rel(i) 1 if the i-th is right. All right
    is 1; a wrong answer costs more the more confident it was (top-1 does not care)."""
    confidence, right = np.asarray(confidence), np.asarray(right, dtype=bool)
    if not len(right):
        return 0.0
    ranked = right[np.argsort(-confidence, kind="stable")]
    precision_at = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    return float(np.sum(precision_at * ranked) / len(ranked))
