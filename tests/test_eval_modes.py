"""train.py --mode=eval and --mode=predict on the demo run's outputs: the package and a weights
file give the same numbers, a test set in another layout is mapped by class name, and
unlabelled images each get their top-k."""
import csv
import json
import shutil

import pytest

from tests.images import broken_files, digit_image, encode, write


def rounded(value):
    """`value` (JSON) with every float to 6 places."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return round(value, 6) if isinstance(value, float) else value


@pytest.fixture(scope="module")
def class_names(demo_run):
    labels = json.load(open(demo_run.out / "labels.json", encoding="utf-8"))
    return [labels[str(i)] for i in range(len(labels))]


def test_eval_of_the_package_and_of_its_weights_agree(demo_run, class_names, tmp_path,
                                                      clean_storage_env, monkeypatch):
    """... and agree again when inference keeps each image's best classes instead of the
    matrix (as it does for 50,000 classes; here past 80 values, so 40 images x 10 classes do
    but their 2 odd/even classes do not): the same metrics, MAP too (10 classes: all kept)."""
    import train
    from evaluation import inference, scores

    # Folder layout with the demo's class names (Chinese, with a '/', so one folder level
    # each for category and item would be wrong: use a manifest), classes in another order.
    rows = []
    for i in range(1000, 1040):
        image, digit = digit_image(i, 20 + i % 13)
        name = f"img/{i}.png"
        write(tmp_path / "test" / name, encode(image, "PNG"))
        rows.append((name, class_names[digit]))
    rows.sort(key=lambda r: r[1], reverse=True)
    with open(tmp_path / "test" / "test.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("path", "label"), *rows])

    results, metrics = {}, {}
    best = inference.best_weights(str(demo_run.out / "weights"))  # what the package holds
    for kind, model, dense_values in (("package", demo_run.out / "model", scores.DENSE_VALUES),
                                      ("weights", best, scores.DENSE_VALUES),
                                      ("package_top", demo_run.out / "model", 80),
                                      ("weights_top", best, 80)):
        monkeypatch.setattr(scores, "DENSE_VALUES", dense_values)
        out = tmp_path / kind
        levels = ["--label_levels_sep=/"] if kind.startswith("package") else []
        assert train.main(["--mode=eval", f"--eval_model={model}",
                           f"--test_data_url={tmp_path / 'test'}", f"--train_url={out}",
                           f"--local_data_root={tmp_path / 'cache'}", *levels]) == 0
        results[kind] = {r["file"]: r for r in csv.DictReader(
            open(out / "evaluation" / "predictions.csv", encoding="utf-8"))}
        metrics[kind] = json.load(open(out / "evaluation" / "metrics.json", encoding="utf-8"))
        assert metrics[kind]["images"] == 40
        assert (out / "evaluation" / "confusion_matrix.png").stat().st_size > 0
    for kind in ("package", "weights"):
        top = metrics[kind + "_top"]
        assert top.pop("map_kept_classes") == len(class_names) and "map_kept_classes" not in \
            metrics[kind]
        assert rounded(top) == rounded(metrics[kind])
        assert results[kind + "_top"] == results[kind]
    # The demo's names are "偶数/零" ... "奇数/九": with --label_levels_sep=/ the odd and even
    # digits are a level of their own, with its reports.
    [level] = metrics["package"]["levels"]
    assert level["classes"] == 2 and level["top1_accuracy"] >= 0.75
    coarse = json.load(open(tmp_path / "package" / "evaluation" / "level_1" / "metrics.json",
                            encoding="utf-8"))
    assert [c["name"] for c in coarse["per_class"]] == ["偶数", "奇数"]
    assert "levels" not in metrics["weights"]
    assert train.main(["--mode=eval", f"--eval_model={demo_run.out / 'model'}",
                       f"--test_data_url={tmp_path / 'test'}", f"--train_url={tmp_path / 'bad'}",
                       f"--local_data_root={tmp_path / 'cache'}", "--label_levels_sep=-"]) == 2
    assert results["package"].keys() == {name for name, _ in rows}
    for name, label in rows:  # labels mapped by name onto the model's ids
        package, weights = results["package"][name], results["weights"][name]
        assert package["true_label"] == label
        assert package["predicted_label"] == weights["predicted_label"]
        assert abs(float(package["score"]) - float(weights["score"])) < 1e-4
    correct = sum(r["correct"] == "1" for r in results["package"].values())
    assert correct >= 30  # held-out digits: the demo model generalises


def test_predict_writes_top_k_for_every_usable_image(demo_run, class_names, tmp_path,
                                                     clean_storage_env):
    import train

    folder = tmp_path / "new"
    for i in range(5):
        write(folder / "sub" / f"{i}.jpg", encode(digit_image(2000 + i, 30)[0]))
    shutil.copy(folder / "sub" / "0.jpg", folder / "copy_of_0.jpg")  # each file gets a row
    data, _ = broken_files(30)["truncated.jpg"]
    write(folder / "truncated.jpg", data)
    assert train.main(["--mode=predict", f"--eval_model={demo_run.out}",
                       f"--test_data_url={folder}", "--top_k=3", f"--train_url={tmp_path / 'p'}",
                       f"--local_data_root={tmp_path / 'cache'}"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p" / "predictions.csv", encoding="utf-8")))
    assert [r["file"] for r in rows] == ["copy_of_0.jpg"] + [f"sub/{i}.jpg" for i in range(5)]
    assert list(rows[0]) == ["file", "label_1", "score_1", "label_2", "score_2", "label_3",
                             "score_3"]
    for row in rows:
        scores = [float(row[f"score_{k}"]) for k in (1, 2, 3)]
        assert scores == sorted(scores, reverse=True) and row["label_1"] in class_names
    assert rows[0]["label_1"] == rows[1]["label_1"]  # the same bytes, the same answer
    report = json.load(open(tmp_path / "p" / "screening_report_test.json"))
    assert [p["file"] for p in report["problems"]] == ["truncated.jpg"]
