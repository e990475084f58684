"""The names of a run's best-weights files (weights/epoch_NNN-val_acc_0.XXXX.weights.h5): written
by training, ranked by training and evaluation alike, so neither stage imports the other."""
import os

SUFFIX = ".weights.h5"


def file_name(epoch, val_accuracy):
    """The file name for the weights after `epoch` (counted from 1)."""
    return f"epoch_{epoch:03d}-val_acc_{val_accuracy:.4f}{SUFFIX}"


def val_accuracy_of(name):
    """The val_accuracy a weights file's name records (-1 for a name without one)."""
    return float(name.split("val_acc_")[1][:6]) if "val_acc_" in name else -1.0


def ranked(folder):
    """The .weights.h5 files of `folder` (a run's weights/), best val_accuracy first."""
    names = [n for n in os.listdir(folder) if n.endswith(SUFFIX)]
    return sorted(names, key=val_accuracy_of, reverse=True)
