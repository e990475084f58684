"""The evaluation stage of a run: probabilities -> metrics, tables, predictions and plots,
written to a local folder and mirrored to {train_url}/evaluation/ (or predictions.csv only, for
unlabelled images)."""
import logging
import os

import numpy as np

import obs_utils

from . import metrics as metrics_lib
from . import plots, reports

log = logging.getLogger("evaluation")
FOLDER = "evaluation"


def _publish(local_dir, url):
    if obs_utils.is_remote(url):
        obs_utils.copy_tree(local_dir, url, progress=False)


def evaluate(samples, probabilities, class_names, train_url, work_dir, log_csv=None):
    """Reports for labelled `samples` under {train_url}/evaluation/; returns the metrics."""
    y_true = np.array([s.label for s in samples], dtype=np.int64)
    metrics = metrics_lib.classification_metrics(y_true, probabilities, class_names)
    local_dir = os.path.join(work_dir, FOLDER)
    reports.write_all(local_dir, metrics, [s.rel for s in samples], y_true, probabilities,
                      class_names)
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
