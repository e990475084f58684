"""evaluation/: metrics checked against hand-computed values, reports read back from disk, and
real PNGs opened with PIL. No TensorFlow: these modules run on numpy arrays."""
import csv
import json
import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest
from matplotlib.ft2font import FT2Font
from PIL import Image

from evaluation import plots, reports
from evaluation.metrics import classification_metrics, summary_line

GARBAGE = ["其他垃圾/一次性快餐盒", "厨余垃圾/剩饭剩菜", "可回收物/充电宝", "有害垃圾/干电池"]


def one_hot_ish(predicted, n_classes, confidence=0.7):
    """Probabilities whose argmax is `predicted`, the rest spread evenly."""
    probs = np.full((len(predicted), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def png_size(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# --- metrics ---------------------------------------------------------------------------------

def test_perfect_predictions_score_one():
    y = np.array([0, 1, 2, 3, 0, 1])
    m = classification_metrics(y, one_hot_ish(y, 4), GARBAGE)
    assert m["images"] == 6 and m["classes"] == 4
    assert m["top1_accuracy"] == m["top5_accuracy"] == m["gap"] == m["map"] == 1.0
    assert m["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert m["weighted"]["f1"] == 1.0
    assert m["confusion_matrix"] == [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert [c["most_confused_with"] for c in m["per_class"]] == ["", "", "", ""]


def test_three_classes_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y, one_hot_ish(pred, 3), ["a", "b", "c"])
    # Confusion rows (true): a -> a, b; b -> b, b; c -> c, a.
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["top1_accuracy"] == pytest.approx(4 / 6)
    a, b, c = m["per_class"]
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((1.0, 1 / 2, 2 / 3))
    assert [x["support"] for x in m["per_class"]] == [2, 2, 2]
    assert m["macro"]["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted"]["precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert [x["most_confused_with"] for x in m["per_class"]] == ["b", "", "a"]
    assert [x["id"] for x in m["per_class"]] == [0, 1, 2]
    assert [x["name"] for x in m["per_class"]] == ["a", "b", "c"]


def test_gap_and_class_map_of_a_worked_example():
    """Four images, three right (top-1 0.75). Ranked by confidence they go right (0.9), wrong
    (0.8), right (0.65), right (0.6): GAP = (1 + 2/3 + 3/4) / 4 = 29/48; the wrong answer
    ranked last instead would give 3/4. MAP over classes: class a's one image ranks first
    (AP 1), class b's two rank 1st and 3rd by b's probability (AP (1 + 2/3) / 2), class c's
    one first (AP 1): 17/18."""
    y = np.array([0, 1, 2, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.2, 0.15, 0.65], [0.3, 0.6, 0.1]])
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["top1_accuracy"] == 0.75
    assert m["gap"] == pytest.approx(29 / 48)
    assert m["map"] == pytest.approx(17 / 18)
    confident_last = probs.copy()
    confident_last[1] = [0.55, 0.4, 0.05]  # the wrong answer, now the least confident
    assert classification_metrics(y, confident_last, ["a", "b", "c"])["gap"] == pytest.approx(
        0.75)


def test_top5_counts_the_true_class_in_second_place():
    n = 6
    y = np.array([0, 1, 2, 3, 4, 5])
    probs = np.full((n, n), 0.01)
    probs[np.arange(n), (y + 1) % n] = 0.6   # best guess is always wrong
    probs[np.arange(n), y] = 0.3              # the truth comes second
    m = classification_metrics(y, probs, [f"c{i}" for i in range(n)])
    assert m["top1_accuracy"] == 0.0
    assert m["top5_accuracy"] == 1.0
    assert m["top_k"] == 5


def test_top_k_is_capped_at_the_class_count_and_summary_line():
    y = np.array([0, 1, 2])
    probs = np.array([[0.1, 0.3, 0.6], [0.6, 0.1, 0.3], [0.6, 0.3, 0.1]])   # truth is last
    m = classification_metrics(y, probs, ["a", "b", "c"], top_k=5)
    assert m["top_k"] == 3 and m["top5_accuracy"] == 1.0
    assert classification_metrics(y, probs, ["a", "b", "c"], top_k=2)["top5_accuracy"] == 0.0
    m = classification_metrics(np.array([0, 1, 1, 1]), one_hot_ish(np.array([0, 1, 1, 0]), 3),
                               ["a", "b", "c"])
    assert summary_line(m) == ("top-1 0.7500, top-3 1.0000, GAP 0.7500, macro F1 0.7333 "
                               "on 4 images (3 classes)")


def test_absent_class_has_support_zero_and_is_not_averaged():
    y = np.array([0, 0, 1, 2])
    m = classification_metrics(y, one_hot_ish(y, 4), GARBAGE)
    absent = m["per_class"][3]
    assert absent["support"] == 0
    assert (absent["precision"], absent["recall"], absent["f1"]) == (0.0, 0.0, 0.0)
    assert m["confusion_matrix"][3] == [0, 0, 0, 0]
    assert m["macro"]["f1"] == 1.0 and m["weighted"]["f1"] == 1.0
    # Plain python types only: json round-trips to the same dict.
    assert json.loads(json.dumps(m, ensure_ascii=False)) == m
    assert type(m["images"]) is int and type(m["top1_accuracy"]) is float
    assert type(m["confusion_matrix"][0][0]) is int
    # A prediction into a class with no images is a confusion like any other.
    m = classification_metrics(y, one_hot_ish(np.array([3, 0, 1, 2]), 4), GARBAGE)
    assert m["per_class"][0]["most_confused_with"] == GARBAGE[3]
    assert m["confusion_matrix"][0] == [1, 0, 0, 1]


@pytest.mark.parametrize("y, probs, message", [
    ([0, 1], np.full((3, 2), 0.5), "2 labels but 3 rows"),
    ([0, 1], np.full((2, 3), 1 / 3), "3 columns but there are 2 class names"),
    ([0, 1], np.full(2, 0.5), "2-D"),
    ([[0, 1]], np.full((2, 2), 0.5), "1-D"),
    ([0, 2], np.full((2, 2), 0.5), "outside 0..1"),
    ([], np.zeros((0, 2)), "empty"),
    ([0, 1], [[0.5, np.nan], [0.5, 0.5]], "NaN"),
])
def test_bad_shapes_raise_value_error(y, probs, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(np.asarray(y), probs, ["a", "b"])


# --- reports ---------------------------------------------------------------------------------

def labelled_case():
    names = GARBAGE + ["a|b, \"quoted\""]
    y = np.array([0, 1, 2, 3, 4, 0, 1])
    pred = np.array([0, 1, 2, 0, 4, 4, 1])
    probs = one_hot_ish(pred, len(names), confidence=0.8)
    files = [f"img_{i}.jpg" for i in range(6)] + ["目录/图片 7.jpg"]
    return names, y, probs, files, classification_metrics(y, probs, names)


def test_five_thousand_classes_evaluate_with_sane_reports(tmp_path):
    """5,000 classes, 6,000 images (float32 probabilities, as the loop gives them): the
    metrics and reports finish without a 5,000 x 5,000 matrix. metrics.json stays small
    (no matrix, no per-class table, the 100 most confused pairs), per_class.csv has every
    class, confused_pairs.csv every wrong pair, the plot the 30 most confused classes; top-5
    is the partitioned top-k's, checked against a full sort."""
    from evaluation import metrics as metrics_lib

    rng = np.random.default_rng(0)
    n, c = 6000, 5000
    names = [f"product_{i:05d}" for i in range(c)]
    y = rng.integers(0, c, n)
    probs = rng.random((n, c), dtype=np.float32)
    probs[np.arange(n), y] += np.where(rng.random(n) < 0.6, 2.0, 0.0).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    m = classification_metrics(y, probs, names)
    full = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    assert m["top5_accuracy"] == float(np.mean((full == y[:, None]).any(axis=1)))
    assert 0.57 < m["top1_accuracy"] < 0.63 and "confusion_matrix" not in m
    assert len(m["confused_pairs"]) == metrics_lib.PAIRS_KEPT
    paths = reports.write_all(tmp_path, m, [f"{i}.jpg" for i in range(n)], y, probs, names)
    saved = json.loads((tmp_path / "metrics.json").read_text("utf-8"))
    assert "per_class" not in saved and saved["per_class_file"] == "per_class.csv"
    assert (tmp_path / "metrics.json").stat().st_size < 50_000
    with open(tmp_path / "per_class.csv", encoding="utf-8") as f:
        assert sum(1 for _ in f) == c + 1
    with open(tmp_path / "confused_pairs.csv", encoding="utf-8") as f:
        pairs = list(csv.DictReader(f))
    assert sum(int(p["images"]) for p in pairs) == n - round(m["top1_accuracy"] * n)
    assert png_size(tmp_path / "confusion_matrix.png")[0] < 4000
    assert str(tmp_path / "confusion_matrix.png") in paths


def kept_top(probs, labels, k, batch=64):
    """TopScores of `probs` gathered batch by batch, as inference keeps them past
    scores.DENSE_VALUES."""
    from evaluation import scores

    collector = scores.Collector(len(probs), probs.shape[1], k)
    collector.dense = False  # too many values to hold, as for 50,000 classes
    for start in range(0, len(probs), batch):
        collector.add(probs[start:start + batch], labels[start:start + batch])
    return collector.result()


def test_kept_best_classes_give_the_matrix_metrics_and_reports(tmp_path):
    """300 images, 40 classes, probabilities rounded to 2 places (ties). From each image's 10
    best classes every metric and report is the matrix's, except MAP: over the kept classes it
    is a lower bound, below the matrix's here, and equal to it when all 40 are kept (ties
    share a threshold as in scikit-learn). The seed's cleaning rule flags the same images."""
    from evaluation import label_issues, scores

    rng = np.random.default_rng(1)
    n, c = 300, 40
    names = [f"c{i}" for i in range(c)]
    y = rng.integers(0, c, n)
    probs = rng.random((n, c)) ** 3
    probs[np.arange(n), y] += np.where(rng.random(n) < 0.5, 2.0, 0.0)
    probs = np.round(probs / probs.sum(axis=1, keepdims=True), 2).astype(np.float32)
    dense = classification_metrics(y, probs, names)
    top = kept_top(probs, y, 10)
    assert isinstance(top, scores.TopScores) and top.ids.shape == (n, 10)
    np.testing.assert_array_equal(top.label_scores, probs[np.arange(n), y])
    kept = classification_metrics(y, top, names)
    assert kept.pop("map_kept_classes") == 10
    map_dense, map_kept = dense.pop("map"), kept.pop("map")
    assert kept == dense
    assert map_kept < map_dense - 0.01
    every = kept_top(probs, y, c)
    assert classification_metrics(y, every, names)["map"] == pytest.approx(map_dense, abs=1e-12)

    files = [f"{i}.jpg" for i in range(n)]
    for form in ("dense", "kept"):
        reports.write_all(tmp_path / form, dense, files, y, probs if form == "dense" else top,
                          names)
        reports.write_top_k(tmp_path / form, files, probs if form == "dense" else top, names,
                            file_name="top.csv")
    for name in ("predictions.csv", "top.csv", "confused_pairs.csv"):
        assert (tmp_path / "kept" / name).read_text() == (tmp_path / "dense" / name).read_text()
    flagged = label_issues.confidence_rule(y, probs)
    np.testing.assert_array_equal(label_issues.confidence_rule(y, top), flagged)
    assert 0 < flagged.sum() < n
    for form, p in (("dense", probs), ("kept", top)):
        label_issues.write(tmp_path / form, files, y, p, flagged, names, "confidence")
    assert ((tmp_path / "kept" / label_issues.FILE_NAME).read_text()
            == (tmp_path / "dense" / label_issues.FILE_NAME).read_text())
    with pytest.raises(Exception, match="too many to hold: use --clean_rule=confidence"):
        label_issues.find(y, top, "cleanlab")


def test_a_coarser_level_sums_its_classes_probabilities_and_gets_its_own_reports(tmp_path):
    """Garbage names, two categories: an image whose best item is wrong can still be right
    in its category (0.4 + 0.35 of category 其他垃圾 beat 0.25), and the kept best classes sum
    to the same category probabilities as the matrix when every class is kept."""
    from evaluation import scores, stage
    from inputs import label_map
    from inputs.layouts import Sample

    names = ["其他垃圾/烟蒂", "可回收物/易拉罐", "其他垃圾/快餐盒", "可回收物/充电宝"]
    [level] = label_map.levels(names, "/")
    probs = np.array([[0.4, 0.25, 0.35, 0.0], [0.1, 0.6, 0.1, 0.2], [0.45, 0.1, 0.2, 0.25]],
                     np.float32)
    coarse = scores.coarser(probs, level.of_class, 2)
    np.testing.assert_allclose(coarse, [[0.75, 0.25], [0.2, 0.8], [0.65, 0.35]], atol=1e-6)
    np.testing.assert_allclose(scores.coarser(kept_top(probs, [2, 1, 3], 4), level.of_class,
                                              2), coarse, atol=1e-6)
    samples = [Sample(f"{i}.jpg", f"/x/{i}.jpg", label) for i, label in enumerate([2, 1, 3])]
    metrics = stage.evaluate(samples, probs, names, str(tmp_path / "out"), str(tmp_path),
                             levels=[level])
    assert metrics["top1_accuracy"] == pytest.approx(1 / 3)  # only the second image
    [summary] = metrics["levels"]
    assert summary["classes"] == 2 and summary["top1_accuracy"] == pytest.approx(2 / 3)
    saved = json.loads((tmp_path / "evaluation" / "level_1" / "metrics.json").read_text("utf-8"))
    assert [c["name"] for c in saved["per_class"]] == ["其他垃圾", "可回收物"]
    assert (tmp_path / "evaluation" / "level_1" / "predictions.csv").is_file()
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text("utf-8"))[
        "levels"] == metrics["levels"]


def test_inference_keeps_the_matrix_up_to_its_limit():
    from evaluation import scores

    assert scores.keeps_dense(1000, 5000) and not scores.keeps_dense(50_000, 50_000)
    collector = scores.Collector(3, 4)
    collector.add(np.eye(4, dtype=np.float32)[:3], [0, 1, 2])
    np.testing.assert_array_equal(collector.result(), np.eye(4)[:3])


def test_write_all_writes_every_report(tmp_path):
    names, y, probs, files, m = labelled_case()
    out = tmp_path / "eval" / "nested"
    paths = reports.write_all(out, m, files, y, probs, names)
    expected = ["metrics.json", "metric.json", "per_class.csv", "per_class.md",
                "predictions.csv", "confused_pairs.csv", "confusion_matrix.png"]
    assert [p.rsplit("/", 1)[-1] for p in paths] == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)

    assert json.loads((out / "metric.json").read_text("utf-8")) == {
        "total_metric": {"total_metric_values": {"accuracy": m["top1_accuracy"]}}}
    assert json.loads((out / "metrics.json").read_text("utf-8")) == m
    assert "其他垃圾/一次性快餐盒" in (out / "metrics.json").read_text("utf-8")   # not \u escapes
    png_size(out / "confusion_matrix.png")
    for name in ("per_class.csv", "predictions.csv", "metrics.json"):
        assert not (out / name).read_bytes().startswith(b"\xef\xbb\xbf"), f"{name} has a BOM"


def test_per_class_csv_and_markdown(tmp_path):
    names, _, _, _, m = labelled_case()
    csv_path, md_path = reports.write_per_class(tmp_path, m)
    with open(csv_path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(reports.PER_CLASS_COLUMNS)
    assert [r["name"] for r in rows] == names
    assert [int(r["support"]) for r in rows] == [2, 2, 1, 1, 1]
    assert rows[3]["most_confused_with"] == "其他垃圾/一次性快餐盒"
    assert rows[0]["most_confused_with"] == "a|b, \"quoted\""
    assert float(rows[0]["precision"]) == pytest.approx(m["per_class"][0]["precision"], abs=1e-6)

    with open(md_path, encoding="utf-8") as f:
        md = f.read().splitlines()
    assert md[0] == summary_line(m)
    table = [line for line in md if line.startswith("|")]
    assert len(table) == 2 + len(names)
    assert table[0] == "| id | name | support | precision | recall | f1 | most_confused_with |"
    # Unescaped pipes would add columns: every row has exactly 8 of them.
    assert all(line.replace("\\|", "").count("|") == 8 for line in table)
    assert "a\\|b, \"quoted\"" in "\n".join(table)
    assert f"{m['per_class'][1]['precision']:.4f}" in table[3]
    assert md[-1].startswith("macro: precision") and "weighted: precision" in md[-1]


def test_predictions_csv_round_trips(tmp_path):
    names, y, probs, files, _ = labelled_case()
    path = reports.write_predictions(tmp_path, files, y, probs, names)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "true_id", "true_label", "predicted_id", "predicted_label",
                             "score", "correct"]
    assert [r["file"] for r in rows] == files
    assert [int(r["true_id"]) for r in rows] == y.tolist()
    assert [r["true_label"] for r in rows] == [names[i] for i in y]
    assert [int(r["predicted_id"]) for r in rows] == [0, 1, 2, 0, 4, 4, 1]
    assert rows[3]["predicted_label"] == "其他垃圾/一次性快餐盒"
    assert [r["correct"] for r in rows] == ["1", "1", "1", "0", "1", "0", "1"]
    assert all(r["score"] == "0.800000" for r in rows)
    with pytest.raises(ValueError, match="one per image"):
        reports.write_predictions(tmp_path, files[:-1], y, probs, names)


def test_top_k_csv(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=9)
    files = [f"u{i}.png" for i in range(9)]
    path = reports.write_top_k(tmp_path, files, probs, GARBAGE, k=10, file_name="top.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "label_1", "score_1", "label_2", "score_2", "label_3",
                             "score_3", "label_4", "score_4"]
    for row, p in zip(rows, probs):
        scores = [float(row[f"score_{i}"]) for i in range(1, 5)]
        assert scores == sorted(scores, reverse=True)
        assert row["label_1"] == GARBAGE[int(np.argmax(p))]
        assert sorted(row[f"label_{i}"] for i in range(1, 5)) == sorted(GARBAGE)
    path = reports.write_top_k(tmp_path, files, probs, GARBAGE, k=2)
    with open(path, encoding="utf-8", newline="") as f:
        assert next(csv.reader(f)) == ["file", "label_1", "score_1", "label_2", "score_2"]


# --- plots -----------------------------------------------------------------------------------

def no_font_warnings(caught):
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_font_for():
    ascii_font = plots.font_for(["abc", "0: class | x"])
    assert ascii_font is not None
    assert {ord(c) for c in "abc0:|x "} <= set(FT2Font(ascii_font).get_charmap())
    rare = "\U0001F9FF\u4e00"
    path = plots.font_for([rare])
    if path is not None:
        charmap = FT2Font(path).get_charmap()
        assert charmap.get(0x1F9FF) and charmap.get(0x4E00)
        assert "last resort" not in path.lower().replace("_", " ")


@pytest.mark.parametrize("n", [43, 100])
def test_confusion_matrix_with_chinese_names(tmp_path, n, caplog):
    rng = np.random.default_rng(n)
    names = [f"{GARBAGE[i % 4]}{i}" for i in range(n)]
    y = rng.integers(0, n, 400)
    pred = np.where(rng.random(400) < 0.7, y, rng.integers(0, n, 400))
    m = classification_metrics(y, one_hot_ish(pred, n), names)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        path = plots.confusion_matrix_png(tmp_path / "cm.png", m["confusion_matrix"], names)
    no_font_warnings(caught)
    width, height = png_size(path)
    assert height >= 1500
    if plots.font_for(names) is None:
        assert "no installed font has their glyphs" in caplog.text
        assert width == height   # no legend column beside the matrix
    else:
        assert width > height


def test_confusion_matrix_grows_with_classes_and_has_a_legend_when_a_font_fits(tmp_path, caplog):
    sizes = {}
    for n in (3, 12, 43):
        names = [f"class {i} | ok" if i % 2 else f"Ωmega {i}" for i in range(n)]   # DejaVu has Ω
        matrix = np.eye(n, dtype=int) * 5
        matrix[0, n - 1] = 2
        with caplog.at_level(logging.INFO):
            sizes[n] = png_size(plots.confusion_matrix_png(tmp_path / f"{n}.png", matrix, names))
    assert sizes[3][1] < sizes[12][1] < sizes[43][1]
    assert all(w > h for w, h in sizes.values()), "covered names get a legend beside it"
    assert "no installed font" not in caplog.text
    assert sizes[43][1] <= plots.MAX_INCHES * plots.DPI
    with pytest.raises(ValueError, match="must be 4 x 4"):
        plots.confusion_matrix_png(tmp_path / "bad.png", np.eye(3), ["a", "b", "c", "d"])


def test_confusion_matrix_counts_and_empty_rows(tmp_path):
    matrix = np.array([[3, 1, 0], [0, 0, 0], [0, 2, 2]])   # class 1 has no images
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for normalize in (True, False):
            png_size(plots.confusion_matrix_png(tmp_path / f"{normalize}.png", matrix,
                                                ["$x$", "b", "c"], normalize=normalize))
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    no_font_warnings(caught)


LOG = """epoch,accuracy,learning_rate,loss,seconds,top5_accuracy,val_accuracy,val_loss,val_top5_accuracy
0,0.5,0.001,1.5,10,0.8,0.55,1.4,0.85
1,0.6,0.001,1.2,10,0.85,0.62,1.1,0.9
2,0.65,0.0005,1.0,10,0.9,0.6,1.15,0.92
2,0.7,0.0005,0.9,10,0.9,0.66,1.0,0.93
3,0.75,0.0001,0.8,10,0.95,0.7,0.95,0.94
"""


def test_training_curves_keep_the_last_row_of_a_resumed_epoch(tmp_path):
    log_csv = tmp_path / "training_log.csv"
    log_csv.write_text(LOG, encoding="utf-8")
    rows = plots.read_training_log(log_csv)
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[2]["accuracy"] == "0.7"
    width, height = png_size(plots.training_curves_png(tmp_path / "curves.png", log_csv))
    assert width > 2 * height


def test_training_curves_tolerate_other_columns(tmp_path):
    log_csv = tmp_path / "old.csv"
    log_csv.write_text("epoch,loss,lr,acc\n0,2.0,0.1,0.3\n1,1.5,0,0.4\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png_size(plots.training_curves_png(tmp_path / "old.png", log_csv))
    assert not caught, [str(w.message) for w in caught]
    only_loss = tmp_path / "loss.csv"
    only_loss.write_text("loss\n2.0\n1.0\n", encoding="utf-8")
    png_size(plots.training_curves_png(tmp_path / "loss.png", only_loss))


@pytest.mark.parametrize("text", ["", "epoch,loss,val_loss\n"])
def test_training_curves_of_an_empty_log_raise(tmp_path, text):
    log_csv = tmp_path / "empty.csv"
    log_csv.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="no epochs"):
        plots.training_curves_png(tmp_path / "x.png", log_csv)


def test_evaluation_imports_no_tensorflow_nor_training_code():
    code = ("import sys, evaluation.metrics, evaluation.reports, evaluation.plots\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'train', 'training', 'export', 'serving')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
