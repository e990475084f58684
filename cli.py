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


def run_job(job, user_errors, log):
    """Run job() -> its summary line, logged; exit status 0. An error the user can fix (one
    of `user_errors`, or an OSError: an unwritable cache, permissions, a full disk) is one log
    line naming the file or the flag, and exit status 2 instead of a traceback. Anything else
    is a bug, ours or a library's: its traceback goes into the log (on ModelArts the log is
    all there is), then one summary line, and exit status 1."""
    try:
        summary = job()
    except user_errors as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 2
    except Exception as exc:  # noqa: BLE001 - logged whole, then summarised
        log.exception("unexpected error; the traceback follows")
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        log.error("failed with an unexpected %s%s: not a problem with your input (the "
                  "traceback above belongs in a bug report)", type(exc).__name__,
                  f" ({first})" if first else "")
        return 1
    log.info("%s", summary)
    return 0
