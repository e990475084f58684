"""PCA whitening learnt on a gallery's features (Jegou & Chum 2012): centred, turned onto the
principal axes and each axis scaled by variance^(-power/2), then L2-normalised again, so that
the few directions every image of the domain shares stop dominating the cosine.

Learnt from streamed blocks (the mean and the D x D covariance summed in float64), so a base
larger than memory is whitened too; scikit-learn's PCA would hold every row. Applying it
(serving.gallery.whiten) travels with a served package.
"""
import numpy as np

from errors import UserError

SPANNED = 1e-6  # axes with less variance than this share of the largest carry no signal


def learn(blocks, dim=0, power=1.0):
    """(mean [D], projection [D, d]) from (first row, [n, D]) blocks: the gallery's principal
    axes, at most `dim` of them (0: every axis the gallery spans, at most N - 1), each scaled
    by its variance^(-power/2) (1: full whitening; 0: PCA only)."""
    count, total, outer = 0, None, None
    for _, block in blocks:
        block = np.asarray(block, dtype=np.float64)
        if total is None:
            total, outer = np.zeros(block.shape[1]), np.zeros((block.shape[1],) * 2)
        count += len(block)
        total += block.sum(axis=0)
        outer += block.T @ block
    if count < 2:
        raise UserError(f"--whiten learns the gallery's principal axes and needs at least 2 "
                        f"gallery images; the base holds {count}")
    mean = total / count
    covariance = (outer - count * np.outer(mean, mean)) / (count - 1)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    keep = int(np.sum(values > values[0] * SPANNED))
    if dim:
        keep = min(keep, dim)
    projection = vectors[:, :keep] / values[:keep] ** (power / 2.0)
    return mean.astype(np.float32), projection.astype(np.float32)
