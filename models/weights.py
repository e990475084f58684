"""Offline pretrained weights: find the file, load it into the backbone, or say loudly that
training starts from random weights. Nothing here can reach for a download hub.

Looked up in order: --pretrained_weights (local path, obs:// or s3://, copied to the cache),
then pretrained/<the standard Keras file name>, then none (a loud warning in the log). Keras-2-era ".h5" notop files load into the Keras 3 model (layer by layer, in order,
as keras.applications itself loads them); Keras 3 ".weights.h5" files load too.
"""
import logging
import os

import obs_utils

from . import backbones

log = logging.getLogger("models")

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "pretrained")


class WeightsError(ValueError):
    """A weights file is missing or does not fit the backbone."""


def resolve(backbone_name, flag, cache_root, pretrained_dir=PRETRAINED_DIR):
    """Local path of the weights file to load, or None (random initialisation)."""
    if flag:
        if obs_utils.is_remote(flag):
            local = os.path.join(cache_root, "weights", os.path.basename(flag.rstrip("/")))
            log.info("copying pretrained weights %s -> %s", flag, local)
            obs_utils.copy(flag, local)
            return local
        path = obs_utils.parse(flag).path
        if not os.path.isfile(path):
            raise WeightsError(f"--pretrained_weights={flag}: no such file")
        return path
    standard = os.path.join(pretrained_dir, backbones.get(backbone_name).weights_file)
    if os.path.isfile(standard):
        log.info("pretrained weights: %s", standard)
        return standard
    return None


def load(backbone, path, backbone_name):
    """Load `path` into the backbone model; WeightsError naming the file and the mismatch."""
    suffix = ".weights.h5" if path.endswith(".weights.h5") else os.path.splitext(path)[1]
    if suffix not in (".h5", ".hdf5", ".weights.h5", ".keras"):
        raise WeightsError(f"{path}: expected a Keras weights file (.h5 or .weights.h5) for "
                           f"{backbone_name}, got {suffix or 'no extension'}")
    try:
        backbone.load_weights(path)
    except (ValueError, KeyError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0][:300].rstrip(".")
        raise WeightsError(
            f"{path} does not fit the {backbone_name} backbone: {detail}. Use the notop file "
            f"named in pretrained/README.md ({backbones.get(backbone_name).weights_file}), or "
            "the --backbone the file was made for") from None
    log.info("loaded pretrained weights %s into %s", path, backbone_name)


RANDOM_WARNING = ("NO PRETRAINED WEIGHTS: %s starts from random weights (no "
                  "--pretrained_weights, and pretrained/%s is absent). Expect far lower "
                  "accuracy on small data sets; see pretrained/README.md")


def warn_random(backbone_name):
    message = RANDOM_WARNING % (backbone_name, backbones.get(backbone_name).weights_file)
    log.warning(message)
    return message
