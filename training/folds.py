"""--kfold: where each fold's run lives ({train_url}/folds/<i>/, a train_url of its own), its
out-of-fold probabilities (the held-out fold's, oof.csv in the fold's folder), and the
gathering of every fold's into {train_url}/oof.csv and the cross-validated accuracy
({train_url}/metrics.json) once all folds are done."""
import json
import logging
import statistics

import numpy as np

import obs_utils
from errors import UserError
from inputs import oof

from . import checkpoints

log = logging.getLogger("training")

FOLDER = "folds"
OOF_FILE = oof.FILE_NAME  # file, label, then one probability column per class name
METRICS_FILE = "metrics.json"


def fold_url(train_url, fold):
    return obs_utils.join(train_url, FOLDER, str(fold))


def fold_done(train_url, fold, max_epochs):
    """The fold finished training and wrote its out-of-fold probabilities."""
    url = fold_url(train_url, fold)
    return (checkpoints.job_finished(url, max_epochs)
            and obs_utils.exists(obs_utils.join(url, OOF_FILE)))


def write_fold_oof(train_url, fold, samples, probabilities, class_names):
    """The fold's held-out images with their probabilities, in the fold's folder."""
    url = obs_utils.join(fold_url(train_url, fold), OOF_FILE)
    obs_utils.write_text(url, oof.to_text([s.rel for s in samples], [s.label for s in samples],
                                          probabilities, class_names))
    return url


def gather(train_url, k, class_names):
    """Every fold's out-of-fold probabilities into {train_url}/oof.csv (sorted by file) and
    the cross-validated accuracy into {train_url}/metrics.json; returns that summary. A fold
    that is not done is an error naming it."""
    missing = [i for i in range(k)
               if not obs_utils.exists(obs_utils.join(fold_url(train_url, i), OOF_FILE))]
    if missing:
        raise UserError(f"folds {missing} of {train_url} are not done: run them (train.py "
                        f"... --kfold={k} --fold=I, or without --fold for all), then "
                        "train.py --mode=oof gathers them")
    files, labels, parts, per_fold = [], [], [], []
    for i in range(k):
        names, truth, probabilities = oof.read(
            obs_utils.join(fold_url(train_url, i), OOF_FILE), class_names)
        ids = np.array([class_names.index(t) for t in truth])
        per_fold.append({"fold": i, "images": len(names),
                         "top1_accuracy": float(np.mean(probabilities.argmax(1) == ids))})
        files += names
        labels += list(ids)
        parts.append(probabilities)
    probabilities = np.concatenate(parts)
    order = np.argsort(files, kind="stable")
    files = [files[i] for i in order]
    labels = np.array(labels)[order]
    probabilities = probabilities[order]
    obs_utils.write_text(obs_utils.join(train_url, OOF_FILE),
                         oof.to_text(files, labels, probabilities, class_names))
    scores = [fold["top1_accuracy"] for fold in per_fold]
    summary = {"kfold": k, "images": len(files),
               "cv_top1_accuracy": {"mean": statistics.mean(scores),
                                    "sd": statistics.stdev(scores) if k > 1 else 0.0},
               "oof_top1_accuracy": float(np.mean(probabilities.argmax(1) == labels)),
               "folds": per_fold}
    obs_utils.write_text(obs_utils.join(train_url, METRICS_FILE), json.dumps(summary, indent=2))
    log.info("%d-fold cross-validation: top-1 %.4f +- %.4f over the folds (%.4f on all %d "
             "out-of-fold predictions); %s and %s in %s", k, summary["cv_top1_accuracy"]["mean"],
             summary["cv_top1_accuracy"]["sd"], summary["oof_top1_accuracy"], len(files),
             OOF_FILE, METRICS_FILE, train_url)
    return summary
