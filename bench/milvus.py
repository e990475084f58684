"""Vector engines side by side on one gallery: our exact numpy search, faiss (IndexFlatIP,
HNSW) and milvus-lite (Milvus' embedded engine: FLAT, HNSW, IVF_FLAT, through pymilvus as
retrieve.py --index_url=PATH.db uses it). Each engine runs in a fresh process on the same
seeded features (L2-normalised, clustered; top-10 by inner product) and reports its build
time, query time, recall@10 against exact search, and the memory it added (the most resident
memory above the features alone, sampled while it builds and searches).

    python bench/milvus.py [--gallery 1000000] [--dim 512] [--queries 1000]
        [--engines numpy,faiss-flat,faiss-hnsw,milvus-flat,milvus-hnsw,milvus-ivf]
"""
import argparse
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import report  # noqa: E402
from retrieval import milvus, search  # noqa: E402

ENGINES = ("numpy", "faiss-flat", "faiss-hnsw", "milvus-flat", "milvus-hnsw", "milvus-ivf")
K = 10


def features(gallery, dim, queries, seed=0, centres=1000, spread=0.6):
    """(gallery [N, D], queries [Q, D]) float32, L2-normalised, around shared centres."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, dim), dtype=np.float32) / np.sqrt(dim)

    def around(count):
        noise = rng.standard_normal((count, dim), dtype=np.float32) * spread / np.sqrt(dim)
        return search.l2_normalise(middle[rng.integers(0, centres, count)] + noise)
    return around(gallery), around(queries)


class MemoryWatch:
    """The most resident memory this process held above its level at the start, sampled
    every 20 ms from /proc (the process-wide peak would count the features' generation)."""

    def __init__(self):
        self.start = self.peak = self._rss_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    def _watch(self):
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self._rss_mb())

    def stop(self):
        self._done.set()
        self._thread.join()
        return round(self.peak - self.start)


def _milvus(engine, gallery, queries):
    """(build s, query s, found ids) of a milvus-lite collection made as retrieve.py does."""
    kind = {"milvus-flat": "exact", "milvus-hnsw": "hnsw", "milvus-ivf": "ivf"}[engine]
    folder = tempfile.mkdtemp(prefix="bench-milvus-")
    try:
        url = os.path.join(folder, "bench.db")
        meta = {"fingerprint": "bench", "backbone": "none", "input_size": 0,
                "dim": gallery.shape[1], "embed_tta": "none"}
        start = time.perf_counter()
        collection = milvus.open_for_index(url, meta, kind)
        names = [str(i) for i in range(len(gallery))]
        for first in range(0, len(gallery), 65536):
            milvus.insert(collection, gallery[first:first + 65536], names[first:first + 65536],
                          ["-"] * len(names[first:first + 65536]),
                          [""] * len(names[first:first + 65536]))
        collection.client.flush(collection.collection)  # sealed: the index is built
        collection.close()
        collection = milvus.open_base(url)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        _, found, _ = collection.search(queries, K)
        query_s = time.perf_counter() - start
        collection.close()
        return build_s, query_s, [[int(n) for n in row] for row in found]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(engine, gallery_size, dim, query_count, out):
    """One engine in this (fresh) process: its figures into the queue `out`."""
    gallery, queries = features(gallery_size, dim, query_count)
    for module in {"faiss": ["faiss"], "milvus": ["faiss", "pymilvus", "milvus_lite"]}.get(
            engine.split("-")[0], []):
        __import__(module)  # code is not the index's memory
    watch = MemoryWatch()
    if engine == "numpy":
        start = time.perf_counter()
        found = search.exact_search(queries, gallery, K)[1]
        build_s, query_s = 0.0, time.perf_counter() - start
    elif engine.startswith("faiss"):
        start = time.perf_counter()
        index = search.approximate_index([(0, gallery)], dim, "hnsw") \
            if engine == "faiss-hnsw" else None
        if index is None:
            import faiss
            index = faiss.IndexFlatIP(dim)
            index.add(gallery)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        found = search.approximate_search(index, queries, K)[1] if engine == "faiss-hnsw" \
            else index.search(queries, K)[1]
        query_s = time.perf_counter() - start
    else:
        build_s, query_s, found = _milvus(engine, gallery, queries)
    memory = watch.stop()
    exact = search.exact_search(queries, gallery, K)[1]
    out.put({"engine": engine, "build_s": round(build_s, 1), "query_s": round(query_s, 2),
             "recall@10": round(search.recall_at_k(found, exact), 4),
             "memory_mb": memory})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    for engine in args.engines.split(","):
        out = context.Queue()
        worker = context.Process(target=measure, args=(engine, args.gallery, args.dim,
                                                       args.queries, out))
        worker.start()
        worker.join()
        try:
            rows.append(out.get(timeout=5))
        except queue.Empty:
            rows.append({"engine": engine, "build_s": f"failed (exit {worker.exitcode})"})
        print(rows[-1], flush=True)
    report("milvus", rows, ["engine", "build_s", "query_s", "recall@10", "memory_mb"],
           {"gallery": args.gallery, "dim": args.dim, "queries": args.queries, "k": K})


if __name__ == "__main__":
    main()
