"""The code folder a training job runs: what train.py needs and nothing else (no tests, bench,
git history, caches, outputs or data), within the platform's limits, uploaded to OBS where
unchanged files are not sent again."""
import os
import shutil

import obs_utils

MAX_FILES = 1000                  # ModelArts' limits on a code folder
MAX_BYTES = 5 * 1024 ** 3
ADVISED_BYTES = 50 * 1024 ** 2    # larger code folders are slow to copy into every container
LEFT_OUT_DIRS = {"tests", "bench", "outputs", "data", "venv", "node_modules", "__pycache__"}
LEFT_OUT_FILES = {"requirements-cpu.txt", "requirements-test.txt", "requirements-cloud.txt"}
LEFT_OUT_SUFFIXES = (".pyc", ".pyo", ".log", ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp",
                     ".tif", ".tiff", ".zip", ".tar", ".gz")


class PackError(ValueError):
    """The code folder cannot be submitted as it is; the message says why and what to do."""


def code_files(root):
    """Relative paths ('/'-separated, sorted) of the files a job needs below `root`: hidden
    files and folders (.git, .venv, ...), tests/, bench/, outputs/, data/, caches, local-only
    requirements files and data files (images, archives) are left out."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in LEFT_OUT_DIRS
                         and not d.endswith(".egg-info"))
        for name in sorted(files):
            if (name.startswith(".") or name in LEFT_OUT_FILES
                    or name.lower().endswith(LEFT_OUT_SUFFIXES)):
                continue
            path = os.path.join(folder, name)
            if os.path.islink(path) and not os.path.exists(path):
                continue
            found.append(os.path.relpath(path, root).replace(os.sep, "/"))
    return found


def check_limits(root, files):
    """PackError past the platform's limits; returns the total size in bytes."""
    if "train.py" not in files:
        raise PackError(f"{root} holds no train.py: run submit.py from the bundle's folder or "
                        "pass --code_dir")
    size = sum(os.path.getsize(os.path.join(root, f)) for f in files)
    if len(files) > MAX_FILES:
        raise PackError(f"the code folder {root} has {len(files)} files, over ModelArts' limit "
                        f"of {MAX_FILES}: move data out of it (read it from --data_url)")
    if size > MAX_BYTES:
        raise PackError(f"the code folder {root} holds {size / 1024 ** 3:.1f} GB, over "
                        f"ModelArts' limit of 5 GB: move data and weights to OBS")
    return size


def upload(root, files, code_url, staging):
    """Copy `files` to a clean staging folder, then to `code_url`: files already there
    unchanged are skipped, and nothing else in code_url is deleted (it may be the user's)."""
    if os.path.exists(staging):
        shutil.rmtree(staging)
    for name in files:
        target = os.path.join(staging, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, *name.split("/")), target)
    return obs_utils.copy_tree(staging, code_url, progress=False)
