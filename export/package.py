"""The model package ModelArts imports: {train_url}/model/ holding the SavedModel, config.json
(the top-level template, filled), labels.json, and customize_service.py with serving/ beside it.
It is built in a local folder, checked with the rules deployment applies, then put in place; an
existing model/ is replaced only when asked (--overwrite_model)."""
import json
import logging
import os
import re
import shutil

import obs_utils
from errors import UserError
from inputs import label_map
from serving import check
from serving import levels as label_levels

from . import saved_model

log = logging.getLogger("export")

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
TEMPLATE = os.path.join(ROOT, "config.json")
SERVICE_FILES = ("customize_service.py", "serving")  # what runs beside the SavedModel
# What customize_service.py (through serving/) imports beyond a TensorFlow runtime's own.
DEPENDENCIES = [{"installer": "pip", "packages": [
    {"package_name": "Pillow", "package_version": "6.2.0", "restraint": "ATLEAST"}]}]


class PackageError(UserError):
    """The package cannot be written where asked; the message says what to do."""


def model_url(train_url):
    return obs_utils.join(train_url, "model")


def exists(train_url):
    """model/ holds anything at all (a package, part of one, or a user's files)."""
    url = model_url(train_url)
    return obs_utils.is_dir(url) and bool(obs_utils.listdir(url))


def complete(train_url):
    """model/ holds a whole package: saved_model.pb is published last, so it is the mark."""
    return obs_utils.exists(obs_utils.join(model_url(train_url), "saved_model.pb"))


def check_destination(train_url, overwrite):
    """Refuse early (before hours of training) when model/ exists and no flag allows
    replacing it."""
    url = model_url(train_url)
    if not overwrite and exists(train_url):
        raise PackageError(f"{url} already holds a model package; pass --overwrite_model=true "
                           "to replace it, or choose another --train_url")


def fill_config(runtime, metrics):
    """config.json: the template with the runtime (when given), the validation metrics
    (accuracy and macro precision / recall / F1, as the model page shows them) and the
    dependencies filled in."""
    with open(TEMPLATE, encoding="utf-8") as f:
        config = json.load(f)
    config["runtime"] = runtime or config.get("runtime", "")
    if metrics:
        config["metrics"] = {"accuracy": round(metrics["top1_accuracy"], 4),
                             **{k: round(metrics["macro"][k], 4)
                                for k in ("precision", "recall", "f1")}}
    else:
        config.pop("metrics", None)
    config["dependencies"] = DEPENDENCIES
    return config


OLDEST_TESTED = (2, 6)  # tests/test_modelarts_runtime.py serves the package on TF 2.6


def _warn_runtime(runtime):
    """Say so when the runtime's TensorFlow is older than any the package is tested on (the
    SavedModel may use ops such a runtime lacks)."""
    found = re.search(r"(?:tensorflow_|tf)(\d+)\.(\d+)", runtime)
    if found and tuple(int(x) for x in found.groups()) < OLDEST_TESTED:
        log.warning("the runtime %s has TensorFlow %s.%s, older than %d.%d, the oldest the "
                    "package is tested on; if deployment fails to load it, pass --runtime="
                    "tensorflow_2.6.0-cuda_11.2-py_3.7-ubuntu_18.04-x86_64 (or a custom "
                    "image)", runtime, found.group(1), found.group(2), *OLDEST_TESTED)


def copy_service(folder):
    """Put this bundle's customize_service.py and serving/ into the package `folder`
    (replacing older copies)."""
    for name in SERVICE_FILES:
        source, target = os.path.join(ROOT, name), os.path.join(folder, name)
        if os.path.isdir(source):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, folder)


def build(model, class_names, input_size, resize_mode, metrics, runtime, folder, tta="none",
          levels_sep=""):
    """Write the whole package into local `folder` (made anew) and check it; serving_default
    averages the `tta` test-time views."""
    fresh_folder(folder)
    saved_model.save(model, folder, input_size, resize_mode, tta)
    return finish(folder, class_names, metrics, runtime, levels_sep)


def fresh_folder(folder):
    """`folder`, empty (an earlier attempt's files removed)."""
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    return folder


def finish(folder, class_names, metrics, runtime, levels_sep=""):
    """Around the SavedModel in `folder`: labels.json, config.json (the `metrics` and
    `runtime`), levels.json (--label_levels_sep: the reply names the levels too), the
    service; then the package check and a check of its replies."""
    with open(os.path.join(folder, label_map.FILE_NAME), "w", encoding="utf-8") as f:
        f.write(label_map.to_json(class_names))
    if levels_sep:
        label_levels.split(class_names, levels_sep)  # ValueError: train.py refused them before
        label_levels.save(folder, levels_sep)
    config = fill_config(runtime, metrics)
    _warn_runtime(config["runtime"])
    with open(os.path.join(folder, check.CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    copy_service(folder)
    problems = check.check_package(folder)
    problems = problems or check.check_replies(folder)  # its replies fit the declared schema
    if problems:  # a bug of ours, not the user's: stop before anything is published
        raise RuntimeError("the exported package fails the check: " + "; ".join(problems))
    return folder


MARK = "saved_model.pb"  # published last: a package without it is not whole


def _put(source, url):
    """Make `url` hold the package at `source` (a local folder or another URL): every file
    but the mark, then what `url` holds and the package lacks removed, then the mark. The
    removal is explicit (MoXing's copy does not mirror)."""
    obs_utils.copy_tree(source, url, progress=False, exclude={MARK})
    wanted = set(obs_utils.listdir(source, recursive=True))
    held = set(obs_utils.listdir(url, recursive=True)) if obs_utils.is_dir(url) else set()
    for name in sorted(held - wanted):
        obs_utils.remove(obs_utils.join(url, name))
    obs_utils.copy(obs_utils.join(source, MARK), obs_utils.join(url, MARK))


def publish(folder, train_url, overwrite):
    """Put the checked package at {train_url}/model (replacing one only when `overwrite`).
    saved_model.pb goes last, so a copy cut short is never taken for a whole package. On OBS
    the new package is uploaded whole beside the old one first ({train_url}/.model-staging):
    a job stopped during that upload, the long part, leaves the old package as it was; then
    the old one loses its mark and the staged one is copied over it inside the store."""
    url = model_url(train_url)
    check_destination(train_url, overwrite)
    if obs_utils.is_remote(url):
        staging = obs_utils.join(train_url, ".model-staging")
        if obs_utils.is_dir(staging):
            obs_utils.remove(staging, recursive=True)
        _put(folder, staging)
        if obs_utils.exists(obs_utils.join(url, MARK)):
            obs_utils.remove(obs_utils.join(url, MARK))
        _put(staging, url)
        obs_utils.remove(staging, recursive=True)
    else:
        fresh = url.rstrip(os.sep) + ".new"
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(folder, fresh)
        if os.path.exists(url):
            shutil.rmtree(url)
        os.replace(fresh, url)
    log.info("model package written to %s (check: OK); serve it with: python "
             "customize_service.py --model_dir %s", url, url)
    return url


def staging_folder(work_dir):
    """Where a package is built before it is published."""
    return os.path.join(work_dir, ".model-staging", "model")


def export(model, class_names, input_size, resize_mode, metrics, train_url, work_dir,
           runtime="", overwrite=False, tta="none", levels_sep=""):
    """Build, check and publish the package; returns its URL."""
    folder = build(model, class_names, input_size, resize_mode, metrics, runtime,
                   staging_folder(work_dir), tta, levels_sep)
    return publish_staged(folder, train_url, overwrite)


def publish_staged(folder, train_url, overwrite):
    """Publish the package built in staging_folder's `folder`, then remove the staging copy;
    returns its URL."""
    url = publish(folder, train_url, overwrite)
    shutil.rmtree(os.path.dirname(folder), ignore_errors=True)
    return url
