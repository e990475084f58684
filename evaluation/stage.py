"""The evaluation stage of a run: probabilities -> metrics, tables, predictions and plots,
written to a local folder and mirrored to {train_url}/evaluation/ (or predictions.csv only, for
unlabelled images)."""
import logging
import os

import numpy as np

import obs_utils

from . import metrics as metrics_lib
from . import plots, reports, scores

log = logging.getLogger("evaluation")
FOLDER = "evaluation"


def _publish(local_dir, url):
    if obs_utils.is_remote(url):
        obs_utils.copy_tree(local_dir, url, progress=False)


def evaluate(samples, probabilities, class_names, train_url, work_dir, log_csv=None,
             levels=()):
    """Reports for labelled `samples` under {train_url}/evaluation/; returns the metrics.
    Each coarser level of `levels` (inputs/label_map.levels) gets the same reports in
    evaluation/level_<depth>/ (its classes' probabilities summed) and a summary in the
    metrics' "levels"."""
    y_true = np.array([s.label for s in samples], dtype=np.int64)
    metrics = metrics_lib.classification_metrics(y_true, probabilities, class_names)
    local_dir = os.path.join(work_dir, FOLDER)
    files = [s.rel for s in samples]
    summaries = []
    for level in levels:
        coarse = scores.coarser(probabilities, level.of_class, len(level.names))
        if coarse is None:
            log.warning("level %d: %d images x %d classes are too many to report", level.depth,
                        len(samples), len(level.names))
            continue
        y_level = np.asarray(level.of_class)[y_true]
        found = metrics_lib.classification_metrics(y_level, coarse, level.names)
        reports.write_all(os.path.join(local_dir, f"level_{level.depth}"), found, files,
                          y_level, coarse, level.names)
        summaries.append({"level": level.depth, "folder": f"level_{level.depth}",
                          **{k: found[k] for k in ("classes", "top1_accuracy", "gap")},
                          "macro_f1": found["macro"]["f1"]})
        log.info("level %d: %s", level.depth, metrics_lib.summary_line(found))
    if summaries:
        metrics["levels"] = summaries
    reports.write_all(local_dir, metrics, files, y_true, probabilities, class_names)
    if log_csv and os.path.isfile(log_csv):
        plots.training_curves_png(os.path.join(local_dir, "training_curves.png"), log_csv)
    url = obs_utils.join(train_url, FOLDER)
    _publish(local_dir, url)
    log.info("evaluation: %s; reports in %s", metrics_lib.summary_line(metrics), url)
    return metrics


def predict(samples, probabilities, class_names, train_url, work_dir, top_k=5):
    """Top-k classes of unlabelled `samples` as {train_url}/predictions.csv."""
    path = reports.write_top_k(work_dir, [s.rel for s in samples], probabilities, class_names,
                               top_k)
    url = obs_utils.join(train_url, os.path.basename(path))
    if obs_utils.is_remote(url):
        obs_utils.copy(path, url)
    log.info("predictions for %d images written to %s", len(samples), url)
    return url
