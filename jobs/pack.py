"""The code folder a training job runs: what train.py needs and nothing else (no tests, bench,
git history, caches, outputs or data), within the platform's limits, uploaded to OBS where
unchanged files are not sent again."""
import logging
import os
import re
import shutil

import obs_utils

log = logging.getLogger("jobs")

MAX_FILES = 1000                  # ModelArts' limits on a code folder
MAX_BYTES = 5 * 1024 ** 3
ADVISED_BYTES = 50 * 1024 ** 2    # larger code folders are slow to copy into every container
LEFT_OUT_DIRS = {"tests", "bench", "outputs", "data", "venv", "node_modules", "__pycache__"}
# What a job runs: Python files, and beside train.py the model config template, the job's
# requirements and any wheel they name. Nothing else goes up: no notes, logs, data, weights.
TOP_LEVEL_FILES = {"config.json", "pip-requirements.txt"}
TOP_LEVEL_SUFFIXES = (".whl",)
# Never uploaded, whatever their suffix: keys and credentials (credentials.csv is the name of
# Huawei Cloud's access-key download).
SECRET = re.compile(r"(^|[._-])(credentials?|secrets?|passwords?|tokens?)([._-]|$)|^id_(rsa|dsa|"
                    r"ecdsa|ed25519)|\.(pem|key|p12|pfx|keystore|jks|asc|gpg)$|^\.?(env|netrc|"
                    r"pypirc)$", re.IGNORECASE)


class PackError(ValueError):
    """The code folder cannot be submitted as it is; the message says why and what to do."""


def code_files(root):
    """Relative paths ('/'-separated, sorted) of the files a job needs below `root`: its .py
    files (outside hidden folders, tests/, bench/, outputs/, data/ and caches), and beside
    train.py config.json, pip-requirements.txt and wheels. Key and credential files are never
    included; a link that leads out of `root` is refused (PackError): its target would go up."""
    real_root = os.path.realpath(root)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in LEFT_OUT_DIRS
                         and not d.endswith(".egg-info"))
        top = os.path.samefile(folder, root)
        for name in sorted(files):
            wanted = name.endswith(".py") or (top and (
                name in TOP_LEVEL_FILES or name.endswith(TOP_LEVEL_SUFFIXES)))
            path = os.path.join(folder, name)
            if wanted and SECRET.search(name):
                log.warning("left out of the code upload: %s (its name says key or "
                            "credentials; rename it if the job needs it)", path)
                continue
            if not wanted or name.startswith("."):
                continue
            if os.path.islink(path):
                target = os.path.realpath(path)
                if not os.path.exists(target):
                    continue
                if os.path.commonpath([real_root, target]) != real_root:
                    raise PackError(f"{path} is a link to {target}, outside the code folder: "
                                    "its contents would be uploaded; copy the file in or "
                                    "remove the link")
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
