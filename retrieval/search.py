"""Top-k search of L2-normalised features by inner product (= cosine similarity).

Exact search multiplies blocks of queries by blocks of the gallery (BLAS) and keeps a running
partial top-k (np.argpartition), so a gallery larger than memory streams through in blocks.
Never a BallTree: in 1,000+ dimensions it is slower than brute force. Approximate search
(faiss HNSW or IVF, for large bases) reports its recall@k against exact on a sample.
Ties rank the lower gallery index first, so results are reproducible.
"""
import logging

import numpy as np

log = logging.getLogger("retrieval")
QUERY_BLOCK = 1024
GALLERY_BLOCK = 16384  # 1,024 x 16,384 float32 scores: 64 MB at a time


def l2_normalise(features):
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def _best_k(scores, indices, k):
    """Per row, the k highest scores (ties: the lower index first), sorted."""
    k = min(k, scores.shape[1])
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition may cut through a run of equal scores: take every tie of the k-th
        kth = np.take_along_axis(scores, part, 1).min(axis=1, keepdims=True)
        if (np.sum(scores >= kth, axis=1) > k).any():
            part = None
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    if part is None:  # rare: resolve ties exactly on the whole rows
        order = np.lexsort((indices, -scores), axis=1)[:, :k]
    else:
        sub_scores = np.take_along_axis(scores, part, 1)
        sub_indices = np.take_along_axis(indices, part, 1)
        order = np.take_along_axis(part, np.lexsort((sub_indices, -sub_scores), axis=1), 1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)


def exact_search(queries, gallery_blocks, k=10):
    """(scores [Q, k], gallery indices [Q, k]) of the k nearest gallery rows per query.

    gallery_blocks: an iterable of (first row index, float32 block [n, D]), e.g.
    FeatureBase.blocks(); or one [N, D] array."""
    queries = np.asarray(queries, dtype=np.float32)
    if isinstance(gallery_blocks, np.ndarray):
        gallery = gallery_blocks
        gallery_blocks = ((i, gallery[i:i + GALLERY_BLOCK])
                          for i in range(0, len(gallery), GALLERY_BLOCK))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_indices = np.zeros((len(queries), 0), dtype=np.int64)
    for first, block in gallery_blocks:
        block = np.asarray(block, dtype=np.float32)
        if block.shape[1] != queries.shape[1]:
            raise ValueError(f"the gallery has {block.shape[1]}-d features, the queries "
                             f"{queries.shape[1]}-d: were they made by the same model?")
        ids = np.arange(first, first + len(block), dtype=np.int64)
        for q in range(0, len(queries), QUERY_BLOCK):
            rows = slice(q, q + QUERY_BLOCK)
            scores = queries[rows] @ block.T
            merged_scores = np.concatenate([best_scores[rows], scores], axis=1)
            merged_ids = np.concatenate(
                [best_indices[rows], np.broadcast_to(ids, scores.shape)], axis=1)
            top_scores, top_ids = _best_k(merged_scores, merged_ids, k)
            if q == 0:
                new_scores = np.empty((len(queries), top_scores.shape[1]), np.float32)
                new_ids = np.empty((len(queries), top_scores.shape[1]), np.int64)
            new_scores[rows], new_ids[rows] = top_scores, top_ids
        best_scores, best_indices = new_scores, new_ids
    if best_indices.shape[1] == 0:
        raise ValueError("the gallery is empty: nothing to search")
    return best_scores, best_indices
