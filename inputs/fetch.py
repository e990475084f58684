"""Bring the training data to local disk: mirror obs:// / s3:// folders into the cache (files
gone from the bucket are removed there too), or build the demo set there. Local folders are used
in place (never copied, never modified)."""
import logging
import os
import tempfile

import obs_utils

from . import demo

log = logging.getLogger("inputs")


def resolve_cache_root(flag=None):
    """The local cache: the flag if given, else /cache (ModelArts' local disk) when writable,
    else ~/.cache/modelarts-classifier."""
    if flag:
        os.makedirs(flag, exist_ok=True)
        return os.path.abspath(flag)
    if os.path.isdir("/cache") and os.access("/cache", os.W_OK):
        return "/cache"
    root = os.path.join(os.path.expanduser("~"), ".cache", "modelarts-classifier")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError:
        root = os.path.join(tempfile.gettempdir(), "modelarts-classifier")
        os.makedirs(root, exist_ok=True)
    return root


def cache_dir_for(url, cache_root):
    """Where a remote folder is mirrored: <cache>/data/<bucket>/<path>, stable across runs so a
    restarted job finds its data already there."""
    loc = obs_utils.parse(url)
    return os.path.join(cache_root, "data", loc.bucket, *[p for p in loc.path.split("/") if p])


def fetch_data(data_url, cache_root, threads=None):
    """Return a local folder holding the data of `data_url` (None: the built-in demo digits)."""
    if not data_url:
        folder = os.path.join(cache_root, "demo", "digits")
        log.info("no --data_url: using the built-in demo data (scikit-learn's handwritten "
                 "digits) in %s", folder)
        return demo.write_digits(folder)
    if obs_utils.is_remote(data_url):
        folder = cache_dir_for(data_url, cache_root)
        log.info("syncing %s -> %s", data_url, folder)
        # A mirror: images deleted from the bucket must not go on being trained on.
        obs_utils.copy_tree(data_url, folder, threads=threads, delete=True)
        return folder
    folder = obs_utils.parse(data_url).path
    if not os.path.isdir(folder):
        raise obs_utils.NotFoundError(f"--data_url={data_url}: no such local folder")
    return folder
