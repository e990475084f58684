"""The names of a run's best-weights files (weights/epoch_NNN-val_acc_0.XXXX.weights.h5, or
val_macro_recall_ / val_gap_ / val_loss_ under --monitor): written by training, ranked by training and
evaluation alike, so neither stage imports the other."""
import os
import re

SUFFIX = ".weights.h5"
# --monitor -> (the tag in the file name, whether larger is better)
MONITORS = {"val_accuracy": ("val_acc", True), "val_macro_recall": ("val_macro_recall", True),
            "val_gap": ("val_gap", True), "val_loss": ("val_loss", False)}
_RECORDED = re.compile(r"-(val_acc|val_macro_recall|val_gap|val_loss)_(-?[\d.]+|nan|inf)"
                       + re.escape(SUFFIX) + "$")


def file_name(epoch, value, monitor="val_accuracy"):
    """The file name for the weights after `epoch` (counted from 1), whose `monitor` was
    `value`."""
    return f"epoch_{epoch:03d}-{MONITORS[monitor][0]}_{value:.4f}{SUFFIX}"


def score_of(name):
    """How good a weights file's name says it is, larger better (a loss counts negated);
    -inf for a name that records nothing."""
    found = _RECORDED.search(name)
    if not found:
        return float("-inf")
    value = float(found.group(2))
    if value != value:  # nan: the worst
        return float("-inf")
    larger_better = next(better for tag, better in MONITORS.values() if tag == found.group(1))
    return value if larger_better else -value


def better(value, than_name, monitor="val_accuracy"):
    """Whether an epoch whose `monitor` is `value` beats the file `than_name`."""
    score = value if MONITORS[monitor][1] else -value
    return score > score_of(than_name)


def ranked(folder):
    """The .weights.h5 files of `folder` (a run's weights/), best first."""
    names = [n for n in os.listdir(folder) if n.endswith(SUFFIX)]
    return sorted(names, key=score_of, reverse=True)
