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


RERANK_MAX_IMAGES = 10000  # queries + gallery: about 18 bytes a pair held at once, 1.8 GB


def k_reciprocal_rerank(queries, gallery, k=10, k1=20, k2=6, lambda_value=0.3):
    """(scores [Q, k], gallery indices [Q, k]) re-ranked by k-reciprocal encoding (Zhong et al.,
    CVPR 2017): the Jaccard distance of k-reciprocal neighbour sets, blended with the original.

    Queries and gallery (L2-normalised) form one set of N images; d is their squared Euclidean
    distance, each row divided by its maximum. R(p, k1) holds the images among p's k1+1 nearest
    that hold p among theirs; it grows by R(c, k1/2) of each member c sharing more than 2/3 of
    it, then weighs its members by exp(-d) (rows sum to 1) and is averaged over p's k2 nearest
    (local query expansion). The Jaccard distance is 1 - sum(min) / sum(max) of two such rows,
    and the final distance (1 - lambda) Jaccard + lambda d; the score returned is 1 - it.
    Written here on numpy: no maintained package provides it outside a person-re-id framework.
    All N x N distances are held in memory, so N is capped at RERANK_MAX_IMAGES."""
    queries, gallery = l2_normalise(queries), l2_normalise(gallery)
    nq, n = len(queries), len(queries) + len(gallery)
    if n > RERANK_MAX_IMAGES:
        raise UserError(f"--rerank=kreciprocal holds every distance between {n} images in "
                        f"memory; it takes at most {RERANK_MAX_IMAGES} queries + gallery "
                        "images: search without it, or in smaller sets of queries")
    k1 = max(1, min(k1, n - 1))
    features = np.concatenate([queries, gallery])
    dist = np.maximum(2.0 - 2.0 * (features @ features.T), 0.0)
    dist /= np.maximum(dist.max(axis=1, keepdims=True), 1e-12)
    order = np.argsort(dist, axis=1, kind="stable").astype(np.int32)
    reciprocal, half = _reciprocal_sets(order, k1), _reciprocal_sets(order, int(round(k1 / 2)))
    weights = np.zeros_like(dist)
    for p in range(n):
        members = reciprocal[p]
        grown = [members] + [half[c] for c in members
                             if np.intersect1d(half[c], members).size > 2.0 / 3.0 * half[c].size]
        grown = np.unique(np.concatenate(grown))
        w = np.exp(-dist[p, grown])
        weights[p, grown] = w / w.sum()
    if k2 > 1:  # each row the mean of its k2 nearest rows (itself first)
        weights = np.stack([weights[order[p, :k2]].mean(axis=0) for p in range(n)])
    query_weights, gallery_weights = weights[:nq], weights[nq:]
    jaccard = np.empty((nq, n - nq), dtype=np.float32)
    for q in range(nq):  # sum(min) over the columns where the query's row is non-zero
        columns = np.flatnonzero(query_weights[q])
        shared = np.minimum(query_weights[q, columns], gallery_weights[:, columns]).sum(axis=1)
        jaccard[q] = 1.0 - shared / (2.0 - shared)  # each row sums to 1: sum(max) = 2 - sum(min)
    final = (1.0 - lambda_value) * jaccard + lambda_value * dist[:nq, nq:]
    columns = np.broadcast_to(np.arange(n - nq), final.shape)
    return best_k(1.0 - final, columns, k)


def _reciprocal_sets(order, k):
    """For each image p, the images among its k+1 nearest (itself included) that hold p among
    their own k+1 nearest, as an index array."""
    n = len(order)
    near = np.zeros((n, n), dtype=bool)
    near[np.arange(n)[:, None], order[:, :k + 1]] = True
    both = near & near.T
    return [np.flatnonzero(row) for row in both]
