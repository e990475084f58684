"""What the boot files (train.py, retrieve.py) share on the command line: ModelArts' text
flags read as booleans and counts, and a log a person can read."""
import argparse
import importlib
import logging
import os
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
    """A whole number >= 1 (counts, sizes, epochs)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def not_negative(text):
    """A whole number >= 0 (epochs where 0 means off)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def above_zero(text):
    """A number > 0 (rates, multipliers)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def url_list(text):
    """Comma-separated URLs or paths (empty items dropped), as a tuple."""
    return tuple(item.strip() for item in str(text).split(",") if item.strip())


def weight_list(text):
    """Comma-separated numbers above 0, as a tuple."""
    return tuple(above_zero(item) for item in str(text).split(",") if item.strip())


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, answering a bad flag with one line (the flag, the value, the
    choices) and a pointer to --help, instead of the whole usage block first."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with every flag's default said once: appended unless the help text says it
    already; an empty or unset default said in words; `presets` ({label: {flag: value}}, such
    as the built-in demo's) adds what each runs with where it differs."""

    def __init__(self, prog, presets=None, **kwargs):
        super().__init__(prog, **kwargs)
        self.presets = presets or {}

    def _get_help_string(self, action):
        text = action.help or ""
        if action.nargs == 0 or action.default is argparse.SUPPRESS or not action.option_strings:
            return text  # --help, switches, positional arguments
        said = []
        if "default" not in text:
            default = action.default
            said.append("default: " + ("empty" if default == "" else "unset" if default is None
                                       else "%(default)s"))
        for label, values in self.presets.items():
            if action.dest in values and values[action.dest] != action.default:
                said.append(f"{label}: {values[action.dest]}")
        return f"{text} ({'; '.join(said)})" if said else text


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HelpFormatter with the examples of the description and epilog kept as written."""


def import_tensorflow():
    """Import TensorFlow and Keras with their C++ start-up banner (absl's "before
    absl::InitializeLog()" warning, oneDNN's notice: written before any log level applies)
    kept out of the log. TF_CPP_MIN_LOG_LEVEL=0 or 1, set by the user, shows it again."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1"):
        importlib.import_module("keras")
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        importlib.import_module("keras")  # imports TensorFlow, its backend
    finally:  # an import error is raised after standard error is back
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


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
