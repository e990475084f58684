"""Use Huawei's MoXing when it is really there (inside ModelArts images), and only then.

MoXing's `moxing.file` is the platform's own client for OBS. The PyPI package named `moxing` is
an unrelated project: a `moxing` module without a `file` attribute is ignored (with a warning),
and is not even imported when its files belong to that PyPI distribution.
Set OBS_UTILS_BACKEND=boto3 to bypass MoXing, or =moxing to require it.
"""
import importlib
import importlib.metadata
import logging
import os
import sys

from .errors import ObsError

log = logging.getLogger("obs_utils")

_REQUIRED = ("exists", "is_directory", "list_directory", "read", "write", "copy",
             "copy_parallel", "make_dirs", "remove")
_cache = {}


def _impostor_installed():
    """True when the top-level `moxing` module comes only from the unrelated PyPI package."""
    owners = importlib.metadata.packages_distributions().get("moxing", [])
    return bool(owners) and all(name.lower() == "moxing" for name in owners)


def _find():
    choice = os.environ.get("OBS_UTILS_BACKEND", "auto").lower()
    if choice == "boto3":
        return None
    module = sys.modules.get("moxing")
    if module is None:
        if _impostor_installed():
            log.warning("the installed PyPI package 'moxing' is not Huawei's MoXing; ignoring it "
                        "and using boto3 (remove it with: pip uninstall moxing)")
            return None
        try:
            module = importlib.import_module("moxing")
        except Exception:  # noqa: BLE001 - absent or broken: not on ModelArts
            module = None
    mox_file = getattr(module, "file", None) if module is not None else None
    if mox_file is None and module is not None:
        try:
            mox_file = importlib.import_module("moxing.file")
        except Exception:  # noqa: BLE001 - a 'moxing' without 'file' is not MoXing
            mox_file = None
    if mox_file is not None and not all(hasattr(mox_file, name) for name in _REQUIRED):
        mox_file = None
    if mox_file is None and module is not None:
        log.warning("a 'moxing' module without moxing.file is installed (%s); it is not Huawei's "
                    "MoXing, ignoring it and using boto3", getattr(module, "__file__", "?"))
    if choice == "moxing" and mox_file is None:
        raise ObsError("OBS_UTILS_BACKEND=moxing but MoXing (moxing.file) is not available: "
                       "unset it outside ModelArts, or set OBS_UTILS_BACKEND=boto3")
    return mox_file


def get_mox_file():
    """The `moxing.file` module when it is the real MoXing, else None (decided once)."""
    key = (os.environ.get("OBS_UTILS_BACKEND", "auto"), id(sys.modules.get("moxing")))
    if key not in _cache:
        _cache[key] = _find()
        if _cache[key] is not None:
            log.info("obs_utils: using MoXing for obs:// and s3:// URLs")
    return _cache[key]
