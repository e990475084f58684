"""Label cleaning (train.py --mode=clean): which images' given labels a model's probabilities
doubt, by one of two rules, written as label_issues.csv (file, given label, suggested label,
its probability, the rule) and a cleaned manifest (every image not flagged, with its given
label) that --manifest reads. The images and their labels are never changed.

    confidence  the AliProducts seed's: a class the model gets at least `keep_accuracy` of
                right keeps every image; in any other class the misclassified images go,
                though never the last one (the most probable stays)
    cleanlab    cleanlab's find_label_issues (confident learning) on out-of-fold
                probabilities, where every image was predicted by a model that never saw it
"""
import csv
import os

import numpy as np

from . import scores

RULES = ("confidence", "cleanlab")
FILE_NAME = "label_issues.csv"
MANIFEST = "cleaned_manifest.csv"


def confidence_rule(labels, probabilities, keep_accuracy=0.92):
    """Boolean [N]: the images the seed's rule takes out (see the module's docstring);
    `probabilities` a matrix or scores.TopScores."""
    labels = np.asarray(labels)
    predicted = scores.top_k(probabilities, 1)[0][:, 0]
    given_p = scores.label_scores(probabilities, labels)
    flagged = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        wrong = members[predicted[members] != c]
        if len(wrong) <= len(members) * (1 - keep_accuracy):
            continue  # accuracy >= keep_accuracy
        if len(wrong) == len(members):  # never empty a class: its most probable image stays
            wrong = np.delete(wrong, np.argmax(given_p[wrong]))
        flagged[wrong] = True
    return flagged


def cleanlab_rule(labels, probabilities):
    """Boolean [N]: cleanlab's find_label_issues (prune_by_noise_rate, its default); it needs
    the whole probability matrix."""
    if not scores.is_dense(probabilities):
        from errors import UserError

        raise UserError(f"--clean_rule=cleanlab needs every class's probability, and "
                        f"{probabilities.shape[0]} images x {probabilities.shape[1]} classes "
                        "are too many to hold: use --clean_rule=confidence")
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        from errors import UserError

        raise UserError("--clean_rule=cleanlab needs cleanlab >= 2.8 (pip install "
                        "'cleanlab>=2.8'; earlier versions are AGPL), or use "
                        "--clean_rule=confidence") from None
    return np.asarray(find_label_issues(np.asarray(labels), np.asarray(probabilities)), bool)


def find(labels, probabilities, rule, keep_accuracy=0.92):
    if rule == "confidence":
        return confidence_rule(labels, probabilities, keep_accuracy)
    if rule == "cleanlab":
        return cleanlab_rule(labels, probabilities)
    raise ValueError(f"unknown rule {rule!r}: one of {RULES}")


def write(directory, files, labels, probabilities, flagged, class_names, rule):
    """label_issues.csv (the flagged images, least probable given label first) and
    cleaned_manifest.csv (path,label of the others) in `directory`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    labels = np.asarray(labels)
    suggested, suggested_p = (a[:, 0] for a in scores.top_k(probabilities, 1))
    given_p = scores.label_scores(probabilities, labels)
    order = sorted(np.flatnonzero(flagged), key=lambda i: (given_p[i], files[i]))
    issues = os.path.join(directory, FILE_NAME)
    with open(issues, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["file", "given_label", "suggested_label", "suggested_probability",
                      "given_probability", "rule"])
        for i in order:
            out.writerow([files[i], class_names[labels[i]], class_names[suggested[i]],
                          f"{suggested_p[i]:.6f}", f"{given_p[i]:.6f}", rule])
    manifest = os.path.join(directory, MANIFEST)
    with open(manifest, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "label"])
        for i in np.flatnonzero(~flagged):
            out.writerow([files[i], class_names[labels[i]]])
    return issues, manifest
