"""Retrieval: the contest's metrics on hand-made rankings, exact search against numpy, the
HDF5 feature base."""
import json
import os

import numpy as np
import pytest

from retrieval import base, metrics, search
from version import VERSION


def test_metrics_on_hand_made_rankings():
    gallery = ["a"] * 2 + ["b"] * 12 + ["c"]
    queries = ["a", "a", "b", "b", "z"]
    ranked = [["a", "a", "b", "b"],    # perfect, R = 2 < 10
              ["b", "a", "b", "a"],    # R = 2: (1/2 + 2/4) / 2 = 0.5
              ["b"] * 10,              # R = 12 > 10: all ten right
              ["a", "c", "a", "c"] + ["a"] * 6,  # worst: nothing right
              ["a", "b", "c", "a"]]    # R = 0: scores 0, counted
    ranked = [(r + ["-"] * 10)[:10] for r in ranked]
    ap = metrics.average_precision(np.array(ranked) == np.array(queries)[:, None],
                                   [2, 2, 12, 12, 0])
    np.testing.assert_allclose(ap, [1.0, 0.5, 1.0, 0.0, 0.0])
    scores = metrics.retrieval_scores(queries, ranked, gallery)
    assert scores["top1_accuracy"] == pytest.approx(2 / 5)
    assert scores["map_at_10"] == pytest.approx(2.5 / 5)
    assert scores["score"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.5)
    assert scores["queries_without_match"] == 1
    assert "1 queries have no match" in metrics.summary_line(scores)


def test_metrics_with_fewer_results_than_k_and_bad_shapes():
    # a gallery of 3: P(1) = 1, P(3) = 2/3 over min(R, 10) = 2
    scores = metrics.retrieval_scores(["a"], [["a", "b", "a"]], ["a", "b", "a"])
    assert scores["map_at_10"] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="ranked_labels must be"):
        metrics.retrieval_scores(["a", "b"], [["a"]], ["a"])


def clustered(n, dim, clusters, rng):
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, n)
    return search.l2_normalise(centres[labels] + 0.8 * rng.normal(size=(n, dim))), labels


def test_exact_search_equals_numpy_argsort_across_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    gallery, _ = clustered(2000, 32, 20, rng)
    queries, _ = clustered(150, 32, 20, rng)
    monkeypatch.setattr(search, "QUERY_BLOCK", 64)      # several blocks each way
    monkeypatch.setattr(search, "GALLERY_BLOCK", 300)
    scores, indices = search.exact_search(queries, gallery, k=10)
    truth = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(indices, truth)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ gallery.T, truth, 1),
                               rtol=1e-5)


def test_ties_rank_the_lower_gallery_index_first(monkeypatch):
    monkeypatch.setattr(search, "GALLERY_BLOCK", 3)
    gallery = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # 12 rows, 3 copies of each
    scores, indices = search.exact_search(np.eye(4, dtype=np.float32)[[2]], gallery, k=5)
    assert indices.tolist() == [[6, 7, 8, 0, 1]]
    assert scores[0].tolist() == [1, 1, 1, 0, 0]
    _, few = search.exact_search(np.eye(4, dtype=np.float32)[[0]], gallery[:2], k=10)
    assert few.tolist() == [[0, 1]]                 # a gallery under k gives what it has
    with pytest.raises(ValueError, match="same model"):
        search.exact_search(np.ones((1, 5), np.float32), gallery, k=3)
    with pytest.raises(ValueError, match="no queries"):
        search.exact_search(np.zeros((0, 4), np.float32), gallery, k=3)


MODEL = {"fingerprint": "abc123", "backbone": "resnet50", "input_size": 224, "dim": 4,
         "embed_tta": "none"}


def write_base(path, names, float16=False, commit=True):
    writer = base.Writer(path, MODEL, label_names=["猫", "狗"], float16=float16)
    features = search.l2_normalise(np.arange(len(names) * 4).reshape(-1, 4) + 1.0)
    writer.append(features, names, [f"d{i}" for i in range(len(names))],
                  np.arange(len(names)) % 2)
    if commit:
        writer.commit()
    else:
        writer.close()
    return features


def test_feature_base_round_trip_with_chinese_names(tmp_path):
    path = str(tmp_path / "gallery.h5")
    names = ["猫/一.jpg", "狗/二.jpg", "plain/3.png"]
    features = write_base(path, names, float16=True)
    with base.open_base(path) as fb:
        assert fb.names == names and fb.label_names == ["猫", "狗"]
        assert fb.labels.tolist() == [0, 1, 0] and len(fb) == 3
        assert fb.file["features"].dtype == np.float16
        got = np.concatenate([block for _, block in fb.blocks(size=2)])
        np.testing.assert_allclose(got, features, atol=1e-3)
        assert {k: str(v) for k, v in MODEL.items()} == {k: fb.meta[k] for k in MODEL}
        assert fb.meta["version"] == VERSION and fb.meta["format"] == "1" and fb.meta["created"]
        fb.check_model(MODEL)
        with pytest.raises(base.BaseError, match="fingerprint 'abc123' in the base, 'zzz' "
                                                 "in the model.*--rebuild"):
            fb.check_model({**MODEL, "fingerprint": "zzz"})
        with pytest.raises(base.BaseError, match="embed_tta 'none' in the base, 'flip'"):
            fb.check_model({**MODEL, "embed_tta": "flip"})
    import h5py

    with h5py.File(path, "a") as f:  # a base made before embed_tta was recorded
        del f.attrs["embed_tta"]
    with base.open_base(path) as fb:
        assert fb.meta["embed_tta"] == "none"
        fb.check_model(MODEL)


def test_an_interrupted_index_keeps_the_old_base_and_its_rows_are_reused(tmp_path):
    path = str(tmp_path / "gallery.h5")
    write_base(path, ["a.jpg", "b.jpg"])
    write_base(path, ["a.jpg", "b.jpg", "c.jpg"], commit=False)   # cut short before commit
    with base.open_base(path) as fb:
        assert fb.names == ["a.jpg", "b.jpg"]                       # the old base, intact
    rows = base.reusable_rows(path, MODEL)
    assert set(rows) == {("a.jpg", "d0"), ("b.jpg", "d1"), ("c.jpg", "d2")}
    with pytest.raises(base.BaseError, match="another model"):
        base.reusable_rows(path, {**MODEL, "dim": 8})
    open(tmp_path / "junk.h5", "w").write("not hdf5")
    with pytest.raises(base.BaseError, match="not a feature base"):
        base.open_base(str(tmp_path / "junk.h5"))
    with pytest.raises(base.BaseError, match="does not exist"):
        base.open_base(os.path.join(str(tmp_path), "none.h5"))


def test_approximate_search_reports_its_recall():
    assert search.recall_at_k([[1, 2, 3], [4, 5, 9]], [[3, 2, 1], [4, 5, 6]]) == 5 / 6
    rng = np.random.default_rng(1)
    gallery, _ = clustered(3000, 32, 30, rng)
    queries, _ = clustered(100, 32, 30, rng)
    _, exact = search.exact_search(queries, gallery, k=10)
    for kind in search.APPROXIMATE:
        index = search.approximate_index([(0, gallery[:1000]), (1000, gallery[1000:])], 32, kind)
        _, found = search.approximate_search(index, queries, k=10, effort=128)
        assert search.recall_at_k(found, exact) > 0.9, kind
    with pytest.raises(ValueError, match="use exact or one of hnsw, ivf"):
        search.approximate_index([(0, gallery)], 32, "annoy")


def test_query_expansion_and_database_augmentation():
    q = np.array([[1.0, 0.0, 0.0]], np.float32)
    near = np.array([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], np.float32)
    # alpha 0: the plain average of the query and its results
    np.testing.assert_allclose(search.query_expansion(q, near, np.ones((1, 2)), alpha=0),
                               [[1 / np.sqrt(3)] * 3], rtol=1e-6)
    # a weaker result counts less (similarity ** alpha); a negative one not at all
    weighted = search.query_expansion(q, near, np.array([[0.5, -0.2]]), alpha=3)
    assert weighted[0, 1] > 0 and weighted[0, 2] == 0
    # DBA pulls near-duplicates together and leaves a lone item where it was
    rng = np.random.default_rng(2)
    base_vector = search.l2_normalise(rng.normal(size=(1, 16)))
    twins = search.l2_normalise(base_vector + 0.3 * rng.normal(size=(2, 16)))
    lone = search.l2_normalise(rng.normal(size=(1, 16)))
    gallery = np.concatenate([twins, lone])
    augmented = search.database_augmentation(gallery, count=2, alpha=1)
    assert augmented[0] @ augmented[1] > twins[0] @ twins[1]
    assert augmented[2] @ lone[0] > 0.9


def _k_reciprocal_by_the_paper(queries, gallery, k1, k2, lambda_value):
    """Zhong et al. 2017, equations 1-13, with Python sets and explicit sums (the final
    query-by-gallery distances), to hold the vectorised search.k_reciprocal_rerank against."""
    x = search.l2_normalise(np.concatenate([queries, gallery])).astype(np.float64)
    n, nq = len(x), len(queries)
    d = np.array([[np.sum((x[p] - x[g]) ** 2) for g in range(n)] for p in range(n)])
    d = d / d.max(axis=1, keepdims=True)
    nearest = [list(np.argsort(d[p], kind="stable")) for p in range(n)]

    def reciprocal(p, k):
        return {g for g in nearest[p][:k + 1] if p in nearest[g][:k + 1]}

    v = np.zeros((n, n))
    for p in range(n):
        r = reciprocal(p, k1)
        grown = set(r)
        for q in r:
            rq = reciprocal(q, int(round(k1 / 2)))
            if len(r & rq) > 2 / 3 * len(rq):
                grown |= rq
        for g in grown:
            v[p, g] = np.exp(-d[p, g])
        v[p] /= v[p].sum()
    v = np.array([np.mean([v[g] for g in nearest[p][:k2]], axis=0) for p in range(n)])
    jaccard = np.array([[1 - np.minimum(v[p], v[g]).sum() / np.maximum(v[p], v[g]).sum()
                         for g in range(nq, n)] for p in range(nq)])
    return (1 - lambda_value) * jaccard + lambda_value * d[:nq, nq:]


def test_k_reciprocal_rerank_is_the_papers_and_lifts_map_where_classes_overlap(monkeypatch):
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 8))
    labels = rng.integers(0, 3, 45)
    features = centres[labels] + rng.normal(size=(45, 8))
    queries, gallery = features[:12], features[12:]
    expected = _k_reciprocal_by_the_paper(queries, gallery, k1=6, k2=3, lambda_value=0.3)
    scores, ranked = search.k_reciprocal_rerank(queries, gallery, k=33, k1=6, k2=3,
                                                lambda_value=0.3)
    np.testing.assert_allclose(1 - scores, np.take_along_axis(expected, ranked, 1), atol=1e-5)
    np.testing.assert_array_equal(ranked, np.argsort(expected, axis=1, kind="stable"))

    # lambda 1 and no expansion: the original distance alone, so exact search's order
    _, plain = search.exact_search(search.l2_normalise(queries), search.l2_normalise(gallery), 10)
    _, same = search.k_reciprocal_rerank(queries, gallery, k=10, k1=6, k2=1, lambda_value=1.0)
    np.testing.assert_array_equal(same, plain)

    # Five noisy classes: the neighbours' neighbours say what the nearest alone get wrong.
    centres = rng.normal(size=(5, 64))
    labels = rng.integers(0, 5, 600)
    features = centres[labels] + 2.25 * rng.normal(size=(600, 64))
    q, g, ql, gl = features[:200], features[200:], labels[:200], labels[200:]
    _, plain = search.exact_search(search.l2_normalise(q), search.l2_normalise(g), 10)
    _, reranked = search.k_reciprocal_rerank(q, g, k=10)
    before = metrics.retrieval_scores(ql, gl[plain], gl, k=10)["map_at_10"]
    after = metrics.retrieval_scores(ql, gl[reranked], gl, k=10)["map_at_10"]
    assert after > before + 0.05, (before, after)

    monkeypatch.setattr(search, "RERANK_MAX_IMAGES", 500)
    with pytest.raises(search.UserError, match="at most 500 queries"):
        search.k_reciprocal_rerank(q, g)


def test_submission_lines_quote_names_that_would_shift_their_neighbours():
    import csv

    from retrieval.stage import submission_line

    line = submission_line("q,1.jpg", ["a,b.jpg", 'say "hi".jpg', "plain.jpg", "{x}.jpg"])
    assert line == '"q,1.jpg",{"a,b.jpg","say ""hi"".jpg",plain.jpg,"{x}.jpg"}\n'
    assert submission_line("q.jpg", ["g1.jpg", "g2.jpg"]) == "q.jpg,{g1.jpg,g2.jpg}\n"
    query, rest = next(csv.reader([line.split(",{")[0]]))[0], line.split(",{", 1)[1]
    assert query == "q,1.jpg"
    assert next(csv.reader([rest.rstrip("\n")[:-1]])) == [
        "a,b.jpg", 'say "hi".jpg', "plain.jpg", "{x}.jpg"]


def test_a_second_index_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    """Another process holds the base's lock: refused, naming it. Killed (its lock left
    behind), the lock is taken over."""
    import signal
    import subprocess
    import sys
    import time

    from tests.servers import ROOT

    path = str(tmp_path / "gallery.h5")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
         "from retrieval import base\nwith base.writing(sys.argv[2]):\n"
         "    print('held', flush=True); time.sleep(120)", ROOT, path],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(base.BaseError, match=f"another retrieve.py index is writing "
                                                 f".*pid {holder.pid} on"):
            with base.writing(path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    time.sleep(0.1)
    assert os.path.exists(path + ".lock")  # a killed writer leaves it
    with base.writing(path):
        assert json.load(open(path + ".lock"))["pid"] == os.getpid()
    assert not os.path.exists(path + ".lock")


def test_names_utf8_cannot_hold_are_named_and_left_out_before_embedding(caplog):
    from inputs.layouts import Sample
    from retrieval.stage import _storable

    bad = os.fsdecode(b"shelf/caf\xe9.jpg")  # Latin-1 bytes on disk: not UTF-8
    samples = [Sample("a.jpg", "/x/a.jpg", 0), Sample(bad, "/x/bad", 0),
               Sample("好.jpg", "/x/c.jpg", 0)]
    assert [s.rel for s in _storable(samples, "gallery")] == ["a.jpg", "好.jpg"]
    assert "skipped gallery image b'shelf/caf\\xe9.jpg': its name is not UTF-8" in caplog.text


def test_pca_whitening_is_sklearns_learnt_in_blocks_and_lifts_map_where_a_nuisance_dominates():
    from sklearn.decomposition import PCA

    from retrieval import whiten
    from serving.gallery import whiten as apply

    rng = np.random.default_rng(5)
    # five classes apart in 16 quiet dimensions; four loud ones say nothing of the class
    labels = rng.integers(0, 5, 400)
    quiet = rng.normal(size=(5, 16))[labels] + 0.5 * rng.normal(size=(400, 16))
    features = search.l2_normalise(np.hstack([quiet, 6.0 * rng.normal(size=(400, 4))]))
    g, q, gl, ql = features[:300], features[300:], labels[:300], labels[300:]
    blocks = [(i, g[i:i + 64]) for i in range(0, 300, 64)]

    mean, projection = whiten.learn(blocks)
    ours, theirs = apply(q, mean, projection), search.l2_normalise(
        PCA(whiten=True).fit(g).transform(q))
    np.testing.assert_allclose(ours @ ours.T, theirs @ theirs.T, atol=1e-4)  # signs aside
    _, rotation = whiten.learn(blocks, power=0.0)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(20), atol=1e-5)  # only turns
    assert whiten.learn(blocks, dim=3)[1].shape == (20, 3)
    assert whiten.learn([(0, g[:5])])[1].shape[1] == 4  # 5 images span at most 4 axes
    with pytest.raises(search.UserError, match="at least 2 gallery images"):
        whiten.learn([(0, g[:1])])

    def map_at_10(queries, gallery):
        _, ranked = search.exact_search(queries, gallery, 10)
        return metrics.retrieval_scores(ql, gl[ranked], gl, k=10)["map_at_10"]
    before, after = map_at_10(q, g), map_at_10(ours, apply(g, mean, projection))
    assert after > before + 0.2, (before, after)


def test_a_whitened_base_keeps_its_features_and_hands_them_out_whitened(tmp_path):
    from retrieval import whiten
    from serving.gallery import Gallery
    from serving.gallery import whiten as apply

    path = str(tmp_path / "gallery.h5")
    rng = np.random.default_rng(6)
    features = search.l2_normalise(rng.normal(size=(40, 4)) * [3.0, 1.0, 1.0, 0.2])
    writer = base.Writer(path, MODEL, label_names=["猫", "狗"])
    writer.append(features, [f"{i}.jpg" for i in range(40)], [f"d{i}" for i in range(40)],
                  np.arange(40) % 2)
    mean, projection = whiten.learn(writer.raw_blocks(size=16))
    writer.set_whitening(mean, projection, 1.0)
    writer.commit()
    queries = search.l2_normalise(rng.normal(size=(5, 4)))
    with base.open_base(path) as fb:
        whitened = apply(features, mean, projection)
        np.testing.assert_allclose(np.concatenate([b for _, b in fb.blocks(size=16)]),
                                   whitened, atol=1e-5)
        np.testing.assert_allclose(fb.rows([[3, 1]]), whitened[[[3, 1]]], atol=1e-5)
        scores, ranked = search.exact_search(fb.prepare(queries), fb.blocks(), 5)
    assert not np.allclose(whitened, features, atol=0.1)  # whitening changed them
    raw = base.reusable_rows(path, MODEL)  # an incremental index reuses them as embedded
    np.testing.assert_allclose(raw[("3.jpg", "d3")], features[3], atol=1e-6)
    served = Gallery(path).nearest(queries, 5)  # the package ranks as retrieve.py search
    assert [[name for name, _ in row] for row in served] == \
        [[f"{i}.jpg" for i in row] for row in ranked.tolist()]
    np.testing.assert_allclose([[s for _, s in row] for row in served], scores, atol=1e-5)


def test_a_package_without_embed_flip_embeds_without_it_unless_flip_is_asked(tmp_path, caplog):
    """Packages exported before 0.7 have `embed` and `info` only: the default falls back to no
    TTA (said in the log); --embed_tta=flip is refused, saying what to do."""
    import tensorflow as tf

    from retrieval.embed import Embedder, ModelError

    class Old(tf.Module):
        def __init__(self):
            super().__init__()
            self.weight = tf.Variable([1.0, 0.0])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def embed(self, images):
            return {"embeddings": tf.tile(self.weight[None], [tf.shape(images)[0], 1])}

        @tf.function(input_signature=[])
        def info(self):
            return {"backbone": tf.constant("resnet50"), "input_size": tf.constant(32),
                    "resize_mode": tf.constant("letterbox"), "dim": tf.constant(2)}

    old = Old()
    tf.saved_model.save(old, str(tmp_path / "old"), signatures={
        "embed": old.embed.get_concrete_function(), "info": old.info.get_concrete_function()})
    assert Embedder(str(tmp_path / "old"), None).meta["embed_tta"] == "none"
    assert "has no embed_flip signature: embedding without flip TTA" in caplog.text
    with pytest.raises(ModelError, match="exported by an older version .flip came in 0.7"):
        Embedder(str(tmp_path / "old"), "flip")
