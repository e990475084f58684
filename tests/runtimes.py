"""The platform's own runtime for the tests: Python 3.7 (pyenv's, on these machines) and a
virtualenv on it with TensorFlow 2.6, the default inference image's versions, built once and
kept in the user's cache between runs."""
import fcntl
import glob
import os
import shutil
import subprocess

CACHE = os.environ.get("MODELARTS_RUNTIME_ENV", os.path.expanduser(
    "~/.cache/modelarts-classifier/runtime-py3.7-tf2.6.0"))
# tensorflow-cpu 2.6.0 with what it needs pinned: keras 2.6 (its ~=2.6 would take 2.15),
# protobuf < 3.21 and Pillow < 10 (the last for Python 3.7); Flask for the framework's app;
# pymilvus 2.3 (the last for Python 3.7) for a package that serves a Milvus collection.
PACKAGES = ["tensorflow-cpu==2.6.0", "keras==2.6.0", "protobuf<3.21", "pillow<10",
            "flask<2.3", "pymilvus>=2.3,<2.4"]


def python37():
    """A working Python 3.7: pyenv's, else one on PATH (a pyenv shim there may answer
    'command not found', so each candidate is tried)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.7*/bin/python")))
    candidates += [shutil.which("python3.7")] if shutil.which("python3.7") else []
    for path in candidates:
        try:
            if subprocess.run([path, "-c", "import sys; assert sys.version_info[:2] == (3, 7)"],
                              capture_output=True, timeout=30).returncode == 0:
                return path
        except OSError:
            continue
    return None


def tensorflow26_python(base_python):
    """The python of the cached Python 3.7 + TF 2.6 virtualenv, built on first use (under a
    lock, so parallel runs wait for one build). Raises RuntimeError with pip's words if the
    build fails."""
    python = os.path.join(CACHE, "bin", "python")
    done = os.path.join(CACHE, ".complete")
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    with open(CACHE + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(done) and _works(python):
            return python
        shutil.rmtree(CACHE, ignore_errors=True)  # a half-built one from a killed run
        steps = [[base_python, "-m", "venv", CACHE],
                 [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  *PACKAGES]]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=1200)
            if proc.returncode:
                raise RuntimeError("building the Python 3.7 + TensorFlow 2.6 environment in "
                                   f"{CACHE} failed: {' '.join(step)}\n{proc.stderr[-3000:]}")
        if not _works(python):
            raise RuntimeError(f"{CACHE} was built but cannot import tensorflow 2.6")
        open(done, "w").close()
    return python


def _works(python):
    try:
        return subprocess.run([python, "-c", "import tensorflow as tf, flask, PIL, pymilvus; "
                               "assert tf.__version__ == '2.6.0'"],
                              capture_output=True, timeout=120).returncode == 0
    except OSError:
        return False
