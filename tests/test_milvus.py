"""retrieve.py with a Milvus feature base, against milvus-lite (Milvus' embedded engine, a
real one, in-process for PATH.db): the same top-10 as the HDF5 base's exact search,
incremental index in place, an approximate index's recall, and each refusal one clear
message. milvus:// on a server, and a package serving it: tests/test_modelarts_runtime.py."""
import json
import logging
import re

import numpy as np
import pytest

from tests.images import digit_image, encode, write

pytest.importorskip("milvus_lite")


def _results(folder):
    """{query: [(gallery, score), ...]} from a search's results.csv."""
    found = {}
    for line in (folder / "results.csv").read_text(encoding="utf-8").splitlines()[1:]:
        query, _, gallery, score = line.rsplit(",", 3)
        found.setdefault(query, []).append((gallery, float(score)))
    return found


def _same_ranking(got, expected):
    assert got.keys() == expected.keys()
    for query in expected:
        assert [g for g, _ in got[query]] == [g for g, _ in expected[query]], query
        np.testing.assert_allclose([s for _, s in got[query]],
                                   [s for _, s in expected[query]], atol=1e-5)


def test_milvus_lite_base_matches_exact_search_and_indexes_in_place(demo_run, tmp_path,
                                                                     caplog):
    import retrieve

    caplog.set_level(logging.INFO)
    for i in range(120):
        image, label = digit_image(i, 16)
        side = "gallery" if i % 3 else "queries"
        write(tmp_path / side / f"类{label}" / f"{i}.png", encode(image, "PNG"))
    model = [f"--model_dir={demo_run.out}", f"--local_data_root={demo_run.root / 'cache'}",
             "--embed_tta=multiscale"]  # the gallery and the queries at three scales
    db = [f"--index_url={tmp_path / 'milvus' / 'gallery.db'}", *model]
    h5 = [f"--index_url={tmp_path / 'gallery.h5'}", *model]
    gallery, queries = f"--data_url={tmp_path / 'gallery'}", f"--data_url={tmp_path / 'queries'}"
    for base in (db, h5):
        assert retrieve.main(["index", gallery, *base]) == 0
    assert re.search(r"indexed 80 images into \S+gallery\.db \(80 embedded at [\d.]+ images/s, "
                     r"0 kept, 0 removed, 0 skipped; .*, multiscale TTA; Milvus FLAT\)",
                     caplog.text), caplog.text

    # Exact (FLAT) in Milvus: the HDF5 base's exact top-10, scores and metrics; with
    # alpha-QE (the stored vectors fetched back) too. Queries embedded as the gallery was.
    for extra, name in (([], "plain"), (["--query_expansion=3"], "qe")):
        for base, side in ((db, "milvus"), (h5, "h5")):
            assert retrieve.main(["search", queries, *base, *extra,
                                  f"--output_url={tmp_path / name / side}"]) == 0
        _same_ranking(_results(tmp_path / name / "milvus"), _results(tmp_path / name / "h5"))
        metrics = [json.loads((tmp_path / name / side / "metrics.json").read_text())
                   for side in ("milvus", "h5")]
        assert metrics[0] == metrics[1] and metrics[0]["queries"] == 40
    assert (tmp_path / "plain" / "milvus" / "submission.csv").read_text(encoding="utf-8") == \
        (tmp_path / "plain" / "h5" / "submission.csv").read_text(encoding="utf-8")
    assert _results(tmp_path / "qe" / "milvus") != _results(tmp_path / "plain" / "milvus")
    assert "queries embedded with multiscale TTA, as the base was" in caplog.text

    # In place: one image gone, one with new bytes, one new: two embedded, two rows removed.
    (tmp_path / "gallery" / "类1" / "1.png").unlink()
    write(tmp_path / "gallery" / "类2" / "2.png", encode(digit_image(5, 16)[0], "PNG"))
    write(tmp_path / "gallery" / "类9" / "new.png", encode(digit_image(9, 16)[0], "PNG"))
    caplog.clear()
    assert retrieve.main(["index", gallery, *db]) == 0
    assert "80 images, 78 already in" in caplog.text and "2 to embed, 2 rows removed" in \
        caplog.text, caplog.text
    assert re.search(r"indexed 80 images into .*\(2 embedded.*78 kept, 2 removed", caplog.text)
    assert retrieve.main(["index", gallery, *h5]) == 0
    for base, side in ((db, "milvus"), (h5, "h5")):
        assert retrieve.main(["search", queries, *base,
                              f"--output_url={tmp_path / 'again' / side}"]) == 0
    _same_ranking(_results(tmp_path / "again" / "milvus"), _results(tmp_path / "again" / "h5"))
    found = {g for hits in _results(tmp_path / "again" / "milvus").values() for g, _ in hits}
    assert "类1/1.png" not in found

    # Another index kind is refused on the collection as made; --rebuild makes it HNSW, and
    # search then logs its recall@10 against exact.
    caplog.clear()
    assert retrieve.main(["index", gallery, *db, "--search=hnsw"]) == 2
    assert "was made with --search=exact (FLAT); pass --rebuild=true" in caplog.text
    assert retrieve.main(["index", gallery, *db, "--search=hnsw", "--rebuild=true"]) == 0
    assert retrieve.main(["search", queries, *db, f"--output_url={tmp_path / 'hnsw'}"]) == 0
    assert re.search(r"Milvus HNSW: recall@10 (0\.9\d*|1\.0+) against exact on 40 queries",
                     caplog.text), caplog.text

    # One clear message, exit 2, for what a Milvus base cannot do or was not made for.
    refusals = [
        (["index", gallery, *db, "--whiten=true"], "--whiten=true is for HDF5 bases"),
        (["index", gallery, *db, "--embed_tta=flip"],
         "embed_tta 'multiscale' in the base, 'flip' in the model"),
        (["search", queries, *db, "--rerank=kreciprocal"], "--rerank holds the whole gallery"),
        (["package", *db], "a milvus-lite folder on this machine, which the deployed service "
                           "cannot reach"),
        (["search", queries, f"--index_url={tmp_path / 'none.db'}", *model],
         "none.db does not exist: make it with python retrieve.py index"),
        (["index", gallery, "--index_url=obs://bucket/gallery.db", *model],
         "milvus-lite keeps its .db folder on a local disk"),
        (["index", gallery, "--index_url=milvus://127.0.0.1:1/9bad", *model],
         "write milvus://HOST:PORT/COLLECTION"),
        (["index", gallery, "--index_url=milvus://127.0.0.1:1/gallery", *model],
         "cannot open Milvus at http://127.0.0.1:1"),
    ]
    for argv, message in refusals:
        caplog.clear()
        assert retrieve.main(argv) == 2, argv
        assert message in caplog.text, (argv, caplog.text)

