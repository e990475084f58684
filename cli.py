"""What the boot files (train.py, retrieve.py) share on the command line: ModelArts' text
flags read as booleans and counts, and a log a person can read."""
import argparse
import logging
import sys

import obs_utils


def boolean(text):
    """ModelArts passes every hyperparameter as text: accept true/false, 1/0, yes/no."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def setup_logging():
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for chatty in (*obs_utils.CHATTY_LOGGERS, "absl", "tensorflow", "h5py", "faiss"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
