"""The first thing each boot file does: say in one line when this Python or TensorFlow is too
old for the bundle, instead of dying on an import. ModelArts' preset TensorFlow training image
is TensorFlow 2.1 on Python 3.7, where `import importlib.metadata` alone ends the job with a
bare traceback. Kept to Python 3.6 syntax and the standard library, so it can speak there."""
import sys

MIN_PYTHON = (3, 10)
MIN_TENSORFLOW = (2, 16)
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel",
                            "tensorflow-macos", "tf-nightly", "tf-nightly-cpu")
ADVICE = ("Run it on an image with Python >= 3.10 and TensorFlow >= 2.16 (Keras 3): on ModelArts "
          "the custom image of images/train (submit.py train --image=...; README: Run on "
          "ModelArts), on your own machine a virtualenv with `pip install -r "
          "requirements-cpu.txt`")


def tensorflow_version():
    """The installed TensorFlow's version, read from its metadata (no import), or None."""
    for name in TENSORFLOW_DISTRIBUTIONS:
        try:
            if sys.version_info >= (3, 8):
                import importlib.metadata as metadata
                return metadata.version(name)
            import pkg_resources  # Python 3.7 and older: setuptools' reader
            return pkg_resources.get_distribution(name).version
        except Exception:  # noqa: BLE001 - not installed under this name (or no reader)
            continue
    return None


def _release(version):
    """'2.16.1' -> (2, 16); '2.21.0rc1' -> (2, 21)."""
    parts = []
    for piece in version.split(".")[:2]:
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or 0))
    return tuple(parts)


def problems(python, tensorflow, needs_tensorflow=True):
    """What is too old: [] when `python` (a version tuple) and `tensorflow` (a version string,
    or None when it is not installed) will do."""
    found = []
    if tuple(python[:2]) < MIN_PYTHON:
        found.append("Python {}.{} (it needs >= {}.{})".format(python[0], python[1], *MIN_PYTHON))
    if needs_tensorflow:
        if tensorflow is None:
            found.append("no TensorFlow installed (it needs >= {}.{})".format(*MIN_TENSORFLOW))
        elif _release(tensorflow) < MIN_TENSORFLOW:
            found.append("TensorFlow {} (it needs >= {}.{}, with Keras 3)".format(
                tensorflow, *MIN_TENSORFLOW))
    return found


def check(program, needs_tensorflow=True):
    """Exit with status 2 and one line on standard error when this runtime cannot run
    `program`; return quietly when it can."""
    found = problems(sys.version_info, tensorflow_version() if needs_tensorflow else None,
                     needs_tensorflow)
    if found:
        sys.stderr.write("{} cannot run here: {}. {}\n".format(
            program, " and ".join(found), ADVICE if needs_tensorflow else
            "Use Python >= {}.{}".format(*MIN_PYTHON)))
        sys.exit(2)
