"""Evaluation reports written into a local directory (the caller syncs it to OBS): metrics.json,
the ModelArts metric.json, per-class CSV and Markdown, predictions and the confusion matrix.

Plain UTF-8 everywhere (no BOM), so class names such as "其他垃圾/一次性快餐盒" read back as
written; CSVs go through the csv module, so commas and quotes in names are safe."""
import csv
import json
import os

import numpy as np

from . import plots, scores
from .metrics import confused_pairs, confusion_matrix, summary_line

PER_CLASS_COLUMNS = ("id", "name", "support", "precision", "recall", "f1", "most_confused_with")
PER_CLASS_IN_JSON = 1000   # above this many classes the per-class table is per_class.csv alone
PLOTTED_CLASSES = 30       # a confusion matrix too large to draw: its most confused classes


def _path(directory, name):
    os.makedirs(directory, exist_ok=True)
    return os.path.join(str(directory), name)


def _write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _check_rows(files, probabilities, class_names):
    """The probabilities (a matrix, float32 kept, or TopScores) if they fit the files."""
    if scores.is_dense(probabilities):
        probabilities = np.asarray(probabilities)
        if probabilities.dtype not in (np.float32, np.float64):
            probabilities = probabilities.astype(np.float64)
    if len(probabilities.shape) != 2 or probabilities.shape[1] != len(class_names):
        raise ValueError(f"probabilities must be [images, {len(class_names)} classes], got "
                         f"shape {probabilities.shape}")
    if len(files) != probabilities.shape[0]:
        raise ValueError(f"{len(files)} file names but {probabilities.shape[0]} rows of "
                         f"probabilities: they must be one per image")
    return probabilities


def write_metrics_json(directory, metrics):
    """metrics.json: the metrics dict, readable (indent 2, names as written); above
    PER_CLASS_IN_JSON classes its per-class table is left to per_class.csv (a pointer stays)."""
    path = _path(directory, "metrics.json")
    if len(metrics["per_class"]) > PER_CLASS_IN_JSON:
        metrics = {**{k: v for k, v in metrics.items() if k != "per_class"},
                   "per_class_file": "per_class.csv"}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return path


def write_metric_json(directory, accuracy):
    """metric.json in the ModelArts 2019 baseline format, which its job page reads."""
    path = _path(directory, "metric.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"total_metric": {"total_metric_values": {"accuracy": float(accuracy)}}}, f)
    return path


def _markdown_cell(value):
    return " ".join(str(value).split()).replace("|", "\\|")


def write_per_class(directory, metrics):
    """per_class.csv and per_class.md (summary line, table, then the averages); returns both."""
    rows = [[c["id"], c["name"], c["support"], f"{c['precision']:.6f}", f"{c['recall']:.6f}",
             f"{c['f1']:.6f}", c["most_confused_with"]] for c in metrics["per_class"]]
    csv_path = _write_csv(_path(directory, "per_class.csv"), PER_CLASS_COLUMNS, rows)

    lines = [summary_line(metrics), "",
             "| " + " | ".join(PER_CLASS_COLUMNS) + " |",
             "|" + "|".join(["---:", ":---", "---:", "---:", "---:", "---:", ":---"]) + "|"]
    shown = metrics["per_class"]
    if len(shown) > PER_CLASS_IN_JSON:  # the lowest recalls; every class is in the CSV
        shown = sorted((c for c in shown if c["support"]), key=lambda c: (c["recall"], c["id"]))
        shown = shown[:PER_CLASS_IN_JSON]
        lines[1:1] = ["", f"The {len(shown)} classes of lowest recall; per_class.csv has all "
                          f"{len(metrics['per_class'])}.", ""]
    for c in shown:
        cells = [c["id"], _markdown_cell(c["name"]), c["support"], f"{c['precision']:.4f}",
                 f"{c['recall']:.4f}", f"{c['f1']:.4f}", _markdown_cell(c["most_confused_with"])]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    macro, weighted = metrics["macro"], metrics["weighted"]
    lines += ["", f"macro: precision {macro['precision']:.4f}, recall {macro['recall']:.4f}, "
                  f"F1 {macro['f1']:.4f}; weighted: precision {weighted['precision']:.4f}, "
                  f"recall {weighted['recall']:.4f}, F1 {weighted['f1']:.4f}"]
    md_path = _path(directory, "per_class.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path, md_path


def write_predictions(directory, files, y_true, probabilities, class_names,
                      file_name="predictions.csv"):
    """One row per labelled image: truth, prediction, its probability, and correct (1 or 0)."""
    probabilities = _check_rows(files, probabilities, class_names)
    y_true = np.asarray(y_true)
    if y_true.shape != (len(files),):
        raise ValueError(f"{y_true.size} labels for {len(files)} files: they must be one per "
                         f"image")
    predicted, score = scores.top_k(probabilities, 1)
    rows = []
    for name, truth, pred, p in zip(files, y_true, predicted[:, 0], score[:, 0]):
        truth, pred = int(truth), int(pred)
        rows.append([str(name), truth, class_names[truth], pred, class_names[pred],
                     f"{p:.6f}", int(truth == pred)])
    header = ("file", "true_id", "true_label", "predicted_id", "predicted_label", "score",
              "correct")
    return _write_csv(_path(directory, file_name), header, rows)


def write_top_k(directory, files, probabilities, class_names, k=5, file_name="predictions.csv"):
    """For unlabelled images: the k best labels and their scores per file, best first."""
    probabilities = _check_rows(files, probabilities, class_names)
    k = max(1, min(int(k), len(class_names)))
    best, best_scores = scores.top_k(probabilities, k)
    header = ["file"]
    for i in range(1, k + 1):
        header += [f"label_{i}", f"score_{i}"]
    rows = []
    for name, ids, probs in zip(files, best, best_scores):
        row = [str(name)]
        for i, p in zip(ids, probs):
            row += [class_names[int(i)], f"{p:.6f}"]
        rows.append(row)
    return _write_csv(_path(directory, file_name), header, rows)


def write_confused_pairs(directory, pairs, class_names):
    """confused_pairs.csv: every wrong (true, predicted) pair with its images, most first."""
    rows = [[t, class_names[t], p, class_names[p], n] for t, p, n in pairs]
    return _write_csv(_path(directory, "confused_pairs.csv"),
                      ("true_id", "true_label", "predicted_id", "predicted_label", "images"), rows)


def most_confused_png(path, y_true, y_pred, pairs, class_names, supports):
    """The confusion matrix among the PLOTTED_CLASSES classes in the most wrong pairs (as the
    truth or the prediction), each row normalised by all of its class's images."""
    errors = {}
    for t, p, n in pairs:
        errors[t] = errors.get(t, 0) + n
        errors[p] = errors.get(p, 0) + n
    chosen = sorted(sorted(errors, key=lambda c: (-errors[c], c))[:PLOTTED_CLASSES])
    if not chosen:  # nothing wrong: the first classes, all on the diagonal
        chosen = list(range(min(PLOTTED_CLASSES, len(class_names))))
    return plots.confusion_matrix_png(
        path, confusion_matrix(y_true, y_pred, chosen), [class_names[c] for c in chosen],
        ids=chosen, row_totals=[supports[c] for c in chosen],
        title=f"the {len(chosen)} most confused of {len(class_names)} classes (a row: the "
              "share of its class's images)")


def write_all(directory, metrics, files, y_true, probabilities, class_names):
    """Every report of a labelled evaluation; returns the paths written."""
    paths = [write_metrics_json(directory, metrics),
             write_metric_json(directory, metrics["top1_accuracy"])]
    paths += write_per_class(directory, metrics)
    paths.append(write_predictions(directory, files, y_true, probabilities, class_names))
    y_true = np.asarray(y_true)
    y_pred = scores.top_k(probabilities, 1)[0][:, 0]
    pairs = confused_pairs(y_true, y_pred)
    paths.append(write_confused_pairs(directory, pairs, class_names))
    png = _path(directory, "confusion_matrix.png")
    if "confusion_matrix" in metrics:
        paths.append(plots.confusion_matrix_png(png, metrics["confusion_matrix"], class_names))
    else:
        paths.append(most_confused_png(png, y_true, y_pred, pairs, class_names,
                                       [c["support"] for c in metrics["per_class"]]))
    return paths
