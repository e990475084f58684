"""oof.csv: each image's out-of-fold class probabilities from a --kfold run (file, label, then
one column per class name), written by training/folds.py, and read back here as the soft
targets of a distilled round (--distill_from): w * one-hot + (1 - w) * the probabilities.
Cross-entropy is linear in its target, so this trains as if the fold models were teachers,
without running them."""
import csv
import io
import logging

import numpy as np

import obs_utils
from errors import UserError

log = logging.getLogger("inputs")

FILE_NAME = "oof.csv"


def to_text(files, labels, probabilities, class_names):
    """oof.csv's text: one row per image (file, its class name, a probability per class)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "label", *class_names])
    for name, label, row in zip(files, labels, probabilities):
        writer.writerow([name, class_names[label], *(f"{p:.6f}" for p in row)])
    return out.getvalue()


def check_exists(run_url):
    """Refuse a --distill_from that holds no oof.csv, before any work."""
    url = obs_utils.join(run_url, FILE_NAME)
    if not obs_utils.exists(url):
        raise UserError(f"--distill_from: {url} does not exist: point at the train_url of a "
                        "--kfold run whose folds are all done (train.py --mode=oof gathers "
                        "them)")


def read(url, class_names):
    """(files, label names, probabilities [N, classes]) of the oof.csv at `url`, its columns
    put in the order of `class_names` (other classes are refused)."""
    if not obs_utils.exists(url):
        raise UserError(f"{url} does not exist: point at the train_url of a --kfold run whose "
                        "folds are all done (train.py --mode=oof gathers them)")
    rows = list(csv.reader(io.StringIO(obs_utils.read_text(url))))
    header, rows = (rows[0], rows[1:]) if rows else ([], [])
    names = header[2:]
    if header[:2] != ["file", "label"] or not names:
        raise UserError(f"{url} is not an oof.csv this tool wrote (its header is "
                        f"{header[:4]}); point at a --kfold run's train_url")
    if set(names) != set(class_names):
        raise UserError(f"{url} names other classes than this data (only there: "
                        f"{sorted(set(names) - set(class_names))[:5]}, only here: "
                        f"{sorted(set(class_names) - set(names))[:5]}): distill from a run "
                        "on the same classes")
    try:
        probabilities = np.array([[float(p) for p in row[2:]] for row in rows], np.float32)
    except ValueError as exc:
        raise UserError(f"{url} holds a value that is no probability ({exc})") from None
    if probabilities.shape != (len(rows), len(names)):
        raise UserError(f"{url}: some rows do not have {len(names)} probabilities")
    columns = [names.index(n) for n in class_names]
    return [row[0] for row in rows], [row[1] for row in rows], probabilities[:, columns]


def soft_targets(url, class_names):
    """{file: probabilities} of the oof.csv of the --kfold run at `url` (its train_url)."""
    files, _, probabilities = read(obs_utils.join(url, FILE_NAME), class_names)
    log.info("distilling from %s: out-of-fold probabilities of %d images", url, len(files))
    return dict(zip(files, probabilities))


def targets(samples, soft, weight, num_classes):
    """[N, classes] training targets of `samples`: weight * one-hot + (1 - weight) * the
    image's out-of-fold probabilities. Every sample must have some (same data)."""
    missing = [s.rel for s in samples if s.rel not in soft]
    if missing:
        raise UserError(f"{len(missing)} training images have no out-of-fold probabilities "
                        f"(e.g. {missing[:3]}): distill from a --kfold run on the same data")
    onehot = np.eye(num_classes, dtype=np.float32)[[s.label for s in samples]]
    return weight * onehot + (1.0 - weight) * np.stack([soft[s.rel] for s in samples])
