"""retrieve.py end to end over obs:// on the moto server: a model trained on digits 0-6 indexes
and searches digits 7-9, classes it never saw."""
import json
import logging
import re

import h5py
import numpy as np
import requests

import flags
import obs_utils
from tests.images import digit_image, encode, write
from tests.servers import PredictorServer
from tests.test_train_job import SMALL, run_train


def test_retrieval_of_classes_never_trained_over_obs(bucket, tmp_path, caplog):
    import retrieve

    caplog.set_level(logging.INFO)
    for i in range(700):
        image, label = digit_image(i, 28)
        if label <= 6:
            write(tmp_path / "train" / f"digit_{label}" / f"{i}.png", encode(image, "PNG"))
        else:
            side = "gallery" if i % 2 else "queries"
            write(tmp_path / side / f"数字{label}" / f"{i}.jpg", encode(image))
    write(tmp_path / "queries" / "数字7" / "broken.jpg", b"not an image at all")
    for side in ("gallery", "queries"):
        obs_utils.copy_tree(str(tmp_path / side), f"obs://{bucket}/{side}/", progress=False)
    proc = run_train(f"--data_url={tmp_path / 'train'}", f"--train_url=obs://{bucket}/run/",
                     f"--local_data_root={tmp_path / 'cache'}", *SMALL, "--max_epochs=6",
                     "--learning_rate=2e-3", "--freeze_epochs=0", "--task=retrieval",
                     "--embedding_dim=64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trained = json.loads(obs_utils.read_text(f"obs://{bucket}/run/run_config.json"))["config"]
    assert trained["task"] == "retrieval"  # --task's settings, and the override kept
    assert {k: trained["model"][k] for k in ("head", "pooling", "embedding_dim")} == \
        {**{k: flags.TASKS["retrieval"][k] for k in ("head", "pooling")}, "embedding_dim": 64}

    common = [f"--model_dir=obs://{bucket}/run/", f"--index_url=obs://{bucket}/base/digits.h5",
              f"--local_data_root={tmp_path / 'cache'}", "--batch_size=32"]
    assert retrieve.main(["index", f"--data_url=obs://{bucket}/gallery/", *common]) == 0
    assert re.search(r"\(\d+ embedded at [\d.]+ images/s, 0 kept.*, flip TTA\)",
                     caplog.text), caplog.text  # flip by default, for a new base
    assert retrieve.main(["search", f"--data_url=obs://{bucket}/queries/", *common,
                          f"--output_url=obs://{bucket}/found/", "--unknown_flag=1"]) == 0
    assert "ignoring flags retrieve.py does not know: --unknown_flag=1" in caplog.text
    assert "数字7/broken.jpg" in obs_utils.read_text(f"obs://{bucket}/found/screening_report.json")
    scores = json.loads(obs_utils.read_text(f"obs://{bucket}/found/metrics.json"))
    print("retrieval of unseen digits:", scores)
    assert scores["queries"] > 80 and scores["queries_without_match"] == 0
    assert scores["top1_accuracy"] > 0.6, scores   # 3 unseen classes: chance is about 1/3
    assert scores["score"] == 0.5 * scores["top1_accuracy"] + 0.5 * scores["map_at_10"]
    rows = obs_utils.read_text(f"obs://{bucket}/found/results.csv").splitlines()
    assert rows[0] == "query,rank,gallery,score" and len(rows) == 1 + 10 * scores["queries"]
    query, rank, gallery, _ = rows[1].split(",")
    assert query.startswith("数字") and rank == "1" and gallery.startswith("数字")

    # Approximate search with both re-rankings: its recall against exact is in the log.
    caplog.clear()
    assert retrieve.main(["search", f"--data_url=obs://{bucket}/queries/", *common,
                          f"--output_url={tmp_path / 'approx'}", "--search=hnsw",
                          "--query_expansion=3", "--database_augmentation=3"]) == 0
    assert re.search(r"approximate search \(hnsw\): recall@10 (0\.9\d*|1\.0+) against exact",
                     caplog.text), caplog.text
    approx = json.loads((tmp_path / "approx" / "metrics.json").read_text())
    assert approx["top1_accuracy"] > 0.6

    # k-reciprocal re-ranking of the same queries; refused beside approximate search.
    caplog.clear()
    assert retrieve.main(["search", f"--data_url=obs://{bucket}/queries/", *common,
                          f"--output_url={tmp_path / 'rerank'}", "--rerank=kreciprocal"]) == 0
    assert "k-reciprocal re-ranking of" in caplog.text
    reranked = json.loads((tmp_path / "rerank" / "metrics.json").read_text())
    print("re-ranked (k-reciprocal):", reranked)
    assert reranked["queries"] == scores["queries"] and reranked["top1_accuracy"] > 0.6
    caplog.clear()
    assert retrieve.main(["search", f"--data_url=obs://{bucket}/queries/", *common,
                          f"--output_url={tmp_path / 'x'}", "--search=hnsw",
                          "--rerank=kreciprocal"]) == 2
    assert "--search=hnsw does not compute: pass --search=exact" in caplog.text

    # Two more gallery images: only they are embedded; the base grows by two.
    for name in ("new_a.jpg", "new_b.jpg"):
        obs_utils.write_bytes(f"obs://{bucket}/gallery/数字8/{name}",
                              encode(digit_image(8, 28)[0]))
    caplog.clear()
    assert retrieve.main(["index", f"--data_url=obs://{bucket}/gallery/", *common]) == 0
    assert "already embedded by this model, 2 to embed" in caplog.text
    obs_utils.copy(f"obs://{bucket}/base/digits.h5", str(tmp_path / "digits.h5"))
    with h5py.File(tmp_path / "digits.h5") as f:
        names = [n.decode() for n in f["names"][:]]
        assert "数字8/new_a.jpg" in names and len(names) == len(set(names))
        assert f["features"].shape[1] == 64  # the neck's output (--embedding_dim)

    # A base embedded with flip TTA and whitened (PCA learnt on the gallery): search and the
    # served package embed and whiten the queries alike, so both rank the same.
    whitened = [f"--index_url={tmp_path / 'whitened.h5'}", *common[:1], *common[2:]]
    assert retrieve.main(["index", f"--data_url=obs://{bucket}/gallery/", *whitened,
                          "--whiten=true", "--embed_tta=flip"]) == 0
    assert re.search(r"flip TTA; whitened: \d+ of 64 axes, power 0.5", caplog.text), caplog.text
    assert retrieve.main(["search", f"--data_url=obs://{bucket}/queries/", *whitened,
                          f"--output_url={tmp_path / 'whitened'}"]) == 0
    assert "the base is whitened" in caplog.text
    assert "queries embedded with flip TTA, as the base was" in caplog.text
    white = json.loads((tmp_path / "whitened" / "metrics.json").read_text())
    print("whitened:", white)
    assert white["queries"] == scores["queries"] and white["top1_accuracy"] > 0.6
    # Served (from obs://): the package embeds and whitens each image as search did, so it
    # answers with the same neighbours and scores.
    assert retrieve.main(["package", f"--model_dir=obs://{bucket}/run/", *whitened[:1],
                          common[2]]) == 0
    obs_utils.copy_tree(f"obs://{bucket}/run/model/", str(tmp_path / "served" / "model"),
                        progress=False)
    expected = {}
    for line in (tmp_path / "whitened" / "results.csv").read_text().splitlines()[1:]:
        query, _, gallery, score = line.split(",")
        expected.setdefault(query, []).append((gallery, float(score)))
    server = PredictorServer(str(tmp_path / "served" / "model"))
    try:
        for query in sorted(expected)[:6]:
            with open(tmp_path / "queries" / query, "rb") as f:
                reply = requests.post(server.url, files={"images": (query, f.read())}).json()
            got = [(name, score) for name, score in reply["neighbors"]]
            assert reply["result"] == expected[query][0][0]
            assert [n for n, _ in got] == [n for n, _ in expected[query]], query
            np.testing.assert_allclose([v for _, v in got], [v for _, v in expected[query]],
                                       atol=1e-4)
        bad = requests.post(server.url, files={"images": ("x.jpg", b"not an image")})
        assert bad.status_code == 415 and "error" in bad.json()
    finally:
        server.stop()
    caplog.clear()
    assert retrieve.main(["index", f"--data_url=obs://{bucket}/gallery/", *whitened]) == 0
    assert "was whitened; this index is not" in caplog.text
    assert re.search(r"\(0 embedded, \d+ kept, 0 skipped; 64-d, \S+ \w+, flip TTA\)",
                     caplog.text), caplog.text  # unless told, as the base was embedded
    assert retrieve.main(["index", f"--data_url=obs://{bucket}/gallery/", *whitened,
                          "--embed_tta=none"]) == 2
    assert "embed_tta 'flip' in the base, 'none' in the model" in caplog.text
    assert retrieve.main(["index", f"--data_url=obs://{bucket}/gallery/", *whitened,
                          "--whiten=true", "--whiten_dim=-1"]) == 2

    # Searching with another model's base is one clear error, exit 2.
    caplog.clear()
    other = tmp_path / "other.h5"
    with h5py.File(tmp_path / "digits.h5") as f, h5py.File(other, "w") as g:
        for key in f:
            f.copy(key, g)
        g.attrs.update({**f.attrs, "fingerprint": "0123456789abcdef"})
    assert retrieve.main(["search", f"--data_url=obs://{bucket}/queries/", *common[:1],
                          f"--index_url={other}", *common[2:],
                          f"--output_url={tmp_path / 'x'}"]) == 2
    assert "was made by another model or embedding (fingerprint '0123456789abcdef' in the " \
        "base" in caplog.text


def test_the_demo_without_flags_and_a_missing_model(demo_run, tmp_path, caplog):
    """After `python train.py`, index and search need no data flags: the demo digits."""
    import retrieve

    caplog.set_level(logging.INFO)
    common = [f"--model_dir={demo_run.out}", f"--index_url={tmp_path / 'g.h5'}",
              f"--local_data_root={demo_run.root / 'cache'}"]
    assert retrieve.main(["index", *common]) == 0
    assert retrieve.main(["search", *common, f"--output_url={tmp_path / 'out'}",
                          "--top_k=3"]) == 0
    scores = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert scores["queries"] == 1797 and scores["top1_accuracy"] > 0.99  # each finds itself
    assert len((tmp_path / "out" / "results.csv").read_text().splitlines()) == 1 + 3 * 1797
    caplog.clear()
    assert retrieve.main(["index", f"--model_dir={tmp_path / 'nothing'}", *common[1:]]) == 2
    assert "holds no model package (saved_model.pb)" in caplog.text
