"""The retrieval contest's scores (DIGIX), from ranked gallery labels.

- top-1 accuracy: the share of queries whose rank-1 gallery item has the query's label.
- AP@10 of one query: (1 / min(R, 10)) x sum over k = 1..10 of P(k) x rel(k), where R is the
  number of gallery items with the query's label, P(k) the precision of the first k results
  and rel(k) = 1 when result k has the query's label. A query with R = 0 scores 0; such
  queries are counted in the report.
- mAP@10: the mean AP@10 over all queries. score = 0.5 x top-1 + 0.5 x mAP@10.
"""
import numpy as np


def average_precision(relevant, relevant_total, k=10):
    """AP@k per query. relevant: bool [Q, m] (result i has the query's label, in rank order;
    m may be under k for a small gallery); relevant_total: R per query [Q]."""
    relevant = np.asarray(relevant, dtype=bool)[:, :k]
    relevant_total = np.asarray(relevant_total)
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision = np.cumsum(relevant, axis=1) / ranks
    hits = (precision * relevant).sum(axis=1)
    return np.where(relevant_total > 0, hits / np.maximum(np.minimum(relevant_total, k), 1), 0.0)


def retrieval_scores(query_labels, ranked_labels, gallery_labels, k=10):
    """The contest's report for queries with known labels.

    query_labels [Q]; ranked_labels [Q, m]: the labels of each query's results in rank order;
    gallery_labels [N]: every gallery item's label (for R)."""
    query_labels = np.asarray(query_labels)
    ranked_labels = np.asarray(ranked_labels)
    if ranked_labels.ndim != 2 or len(ranked_labels) != len(query_labels):
        raise ValueError(f"ranked_labels must be [queries, results]: got {ranked_labels.shape} "
                         f"for {len(query_labels)} queries")
    if len(query_labels) == 0 or ranked_labels.shape[1] == 0:
        raise ValueError("no queries or no results to score")
    gallery_values, gallery_counts = np.unique(np.asarray(gallery_labels), return_counts=True)
    counts = dict(zip(gallery_values.tolist(), gallery_counts.tolist()))
    relevant_total = np.array([counts.get(label, 0) for label in query_labels.tolist()])
    relevant = ranked_labels == query_labels[:, None]
    top1 = float(relevant[:, 0].mean())
    mean_ap = float(average_precision(relevant, relevant_total, k).mean())
    return {"queries": int(len(query_labels)), "top1_accuracy": top1,
            f"map_at_{k}": mean_ap, "score": 0.5 * top1 + 0.5 * mean_ap,
            "queries_without_match": int((relevant_total == 0).sum())}


def summary_line(scores, k=10):
    line = (f"{scores['queries']} queries: top-1 {scores['top1_accuracy']:.4f}, "
            f"mAP@{k} {scores[f'map_at_{k}']:.4f}, score {scores['score']:.4f}")
    if scores["queries_without_match"]:
        line += f" ({scores['queries_without_match']} queries have no match in the gallery)"
    return line
