"""Top-k search of L2-normalised features by inner product (= cosine similarity).

Exact search multiplies blocks of queries by blocks of the gallery (BLAS) and keeps a running
partial top-k (np.argpartition), so a gallery larger than memory streams through in blocks.
Never a BallTree: in 1,000+ dimensions it is slower than brute force. Approximate search
(faiss HNSW or IVF, for large bases) reports its recall@k against exact on a sample.
Ties rank the lower gallery index first (serving.gallery.best_k, which the deployed
service uses too), so results are reproducible.
"""
import logging

import numpy as np

from errors import UserError
from serving.gallery import best_k

log = logging.getLogger("retrieval")
QUERY_BLOCK = 1024
GALLERY_BLOCK = 16384  # 1,024 x 16,384 float32 scores: 64 MB at a time


def l2_normalise(features):
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def exact_search(queries, gallery_blocks, k=10):
    """(scores [Q, k], gallery indices [Q, k]) of the k nearest gallery rows per query.

    gallery_blocks: an iterable of (first row index, float32 block [n, D]), e.g.
    FeatureBase.blocks(); or one [N, D] array."""
    queries = np.asarray(queries, dtype=np.float32)
    if not len(queries):
        raise ValueError("no queries to search")
    if isinstance(gallery_blocks, np.ndarray):
        gallery = gallery_blocks
        gallery_blocks = ((i, gallery[i:i + GALLERY_BLOCK])
                          for i in range(0, len(gallery), GALLERY_BLOCK))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_indices = np.zeros((len(queries), 0), dtype=np.int64)
    for first, block in gallery_blocks:
        block = np.asarray(block, dtype=np.float32)
        if block.shape[1] != queries.shape[1]:
            raise UserError(f"the gallery has {block.shape[1]}-d features, the queries "
                             f"{queries.shape[1]}-d: were they made by the same model?")
        ids = np.arange(first, first + len(block), dtype=np.int64)
        merged = []  # per block of queries: the best so far and this block, cut to k
        for q in range(0, len(queries), QUERY_BLOCK):
            rows = slice(q, q + QUERY_BLOCK)
            scores = queries[rows] @ block.T
            merged.append(best_k(
                np.concatenate([best_scores[rows], scores], axis=1),
                np.concatenate([best_indices[rows], np.broadcast_to(ids, scores.shape)], axis=1),
                k))
        best_scores = np.concatenate([s for s, _ in merged])
        best_indices = np.concatenate([i for _, i in merged])
    if best_indices.shape[1] == 0:
        raise UserError("the gallery is empty: nothing to search")
    return best_scores, best_indices


APPROXIMATE = ("hnsw", "ivf")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UserError("approximate search needs faiss: pip install faiss-cpu (on ModelArts, "
                         "add faiss-cpu to pip-requirements.txt), or use --search=exact") from None
    return faiss


def approximate_index(gallery_blocks, dim, kind="hnsw", neighbours=32, lists=None):
    """A faiss index over the gallery (held in memory, unlike exact search): HNSW (a graph;
    no training) or IVF (k-means lists of a flat inner-product index; `lists` defaults to
    4 x sqrt(N))."""
    faiss = _faiss()
    blocks = [np.ascontiguousarray(block, dtype=np.float32) for _, block in gallery_blocks]
    gallery = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, neighbours, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    elif kind == "ivf":
        lists = lists or max(1, min(len(gallery) // 39, int(4 * np.sqrt(len(gallery)))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists,
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(gallery)
    else:
        raise UserError(f"--search={kind!r}: use exact or one of {', '.join(APPROXIMATE)}")
    index.add(gallery)
    return index


def approximate_search(index, queries, k=10, effort=64):
    """(scores, indices) from a faiss index; `effort` is HNSW's efSearch or IVF's nprobe
    (more: slower and closer to exact)."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = max(effort, k)
    else:
        index.nprobe = max(1, effort // 4)
    scores, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, indices


def recall_at_k(found, exact):
    """The share of the exact top-k that the approximate top-k found, over all queries."""
    found, exact = np.asarray(found), np.asarray(exact)
    hits = sum(len(set(f) & set(e)) for f, e in zip(found.tolist(), exact.tolist()))
    return hits / exact.size


def query_expansion(queries, neighbours, scores, alpha=3.0):
    """alpha-QE (Radenovic et al.): each query plus its top-n results weighted by
    similarity^alpha, re-normalised (alpha 0: average QE). neighbours [Q, n, D], scores [Q, n]."""
    weights = np.clip(scores, 0.0, None) ** alpha
    return l2_normalise(queries + np.einsum("qn,qnd->qd", weights, neighbours))


def database_augmentation(gallery, count=5, alpha=3.0):
    """DBA: every gallery feature replaced by alpha-QE over its own top-`count` gallery
    neighbours (itself first), so near-duplicates pull together. Holds the gallery in memory."""
    scores, indices = exact_search(gallery, gallery, count)
    return query_expansion(np.zeros_like(gallery), gallery[indices], scores, alpha)
