"""Retrieval search and embedding speed, in one run: on L2-normalised clustered synthetic
features (gallery 100,000 x 2,048, 1,000 queries, top-10), our exact search against
scikit-learn's BallTree (the seed's choice; build + query), scikit-learn brute force and faiss
IndexFlatIP; the approximate paths' speed and recall@10 against exact; and embedding images/s
of ResNet50 at 224 through a package's embed signature (JPEG bytes in).

    python bench/retrieval.py [--gallery 100000] [--dim 2048] [--queries 1000]
        [--balltree_queries 1000] [--embed_images 64]

Goal: exact >= 50x BallTree end to end and within 1.2x of faiss IndexFlatIP.
"""
import argparse
import io
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import report  # noqa: E402
from retrieval import search  # noqa: E402


def clustered(count, dim, centres, rng, spread=0.6):
    labels = rng.integers(0, len(centres), count)
    noise = rng.standard_normal((count, dim), dtype=np.float32) * spread / np.sqrt(dim)
    return search.l2_normalise(centres[labels] + noise)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def embedding_rate(images, batch_size=32):
    """Images/s of ResNet50 at 224 through the embed signature, JPEG bytes in."""
    import tensorflow as tf
    from PIL import Image

    from export import saved_model
    from models import build
    model, _ = build.build_classifier("resnet50", 10, 224)
    folder = tempfile.mkdtemp()
    saved_model.save(model, folder, 224, "letterbox")
    embed = tf.saved_model.load(folder).signatures["embed"]
    rng = np.random.default_rng(0)
    data = []
    for _ in range(batch_size):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(buffer, "JPEG")
        data.append(buffer.getvalue())
    batch = tf.constant(data)
    embed(images=batch)  # trace and warm up
    batches = max(1, images // batch_size)
    seconds, _ = timed(lambda: [embed(images=batch) for _ in range(batches)])
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    return batches * batch_size / seconds, device


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--balltree_queries", type=int, default=1000,
                        help="BallTree answers this many queries, its time scaled to all")
    parser.add_argument("--embed_images", type=int, default=64)
    args = parser.parse_args()

    import faiss
    from sklearn.neighbors import BallTree, NearestNeighbors

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    gallery = clustered(args.gallery, args.dim, centres, rng)
    queries = clustered(args.queries, args.dim, centres, rng)
    k = 10

    ours_s, (_, exact) = timed(lambda: search.exact_search(queries, gallery, k))
    flat = faiss.IndexFlatIP(args.dim)
    faiss_s, (_, faiss_found) = timed(lambda: (flat.add(gallery), flat.search(queries, k))[1])
    brute = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean")
    brute_s, _ = timed(lambda: brute.fit(gallery).kneighbors(queries))
    ball_build_s, tree = timed(lambda: BallTree(gallery))
    part = queries[: args.balltree_queries]
    ball_query_s, _ = timed(lambda: tree.query(part, k=k))
    ball_s = ball_build_s + ball_query_s * len(queries) / len(part)

    rows = [{"search": "ours: exact, blockwise numpy", "seconds": round(ours_s, 2),
             "recall@10": 1.0},
            {"search": "faiss IndexFlatIP (add + search)", "seconds": round(faiss_s, 2),
             "recall@10": round(search.recall_at_k(faiss_found, exact), 4)},
            {"search": "scikit-learn brute force", "seconds": round(brute_s, 2)},
            {"search": "scikit-learn BallTree (build + query)" + (
                f", query time scaled from {len(part)}" if len(part) < len(queries) else ""),
             "seconds": round(ball_s, 1), "build_s": round(ball_build_s, 1)}]
    for kind in search.APPROXIMATE:
        build_s, index = timed(lambda: search.approximate_index([(0, gallery)], args.dim, kind))
        query_s, (_, found) = timed(lambda: search.approximate_search(index, queries, k))
        rows.append({"search": f"ours: approximate {kind} (build + search)",
                     "seconds": round(build_s + query_s, 2), "query_s": round(query_s, 3),
                     "build_s": round(build_s, 2),
                     "recall@10": round(search.recall_at_k(found, exact), 4)})
    rows[0]["vs BallTree"] = round(ball_s / ours_s, 1)
    rows[0]["vs faiss Flat"] = round(ours_s / faiss_s, 2)
    rate, device = embedding_rate(args.embed_images)
    rows.append({"search": f"embedding: ResNet50 224 px, JPEG bytes in ({device})",
                 "images/s": round(rate, 1)})
    report("retrieval", rows, ["search", "seconds", "recall@10", "vs BallTree", "vs faiss Flat",
                               "query_s", "build_s", "images/s"],
           {"gallery": args.gallery, "dim": args.dim, "queries": args.queries, "k": k})


if __name__ == "__main__":
    main()
