"""The layer names each Keras era gave the backbones, and what a file's names say it holds.

Today's keras.applications names are the reference. Earlier writers spelled some differently:
keras-applications 1.0.8's `resnet50.py` (and Keras <= 2.2's ResNet50) used the Caffe names
(`conv1`, `bn_conv1`, `res2a_branch2a`, ...) with BatchNormalization epsilon 1e-3; tf.keras
wrote DenseNet's stem as `conv1/conv` and MobileNetV3 as `Conv/BatchNorm`,
`expanded_conv/depthwise`. A Spelling turns today's layer name into a file's.
"""
import re
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class Spelling:
    label: str                       # for the log: "keras-applications 1.0.8 resnet50.py names"
    file_name: Callable[[str], str]  # today's layer name -> the name this era wrote
    bn_epsilon: Optional[float] = None  # the era's BatchNormalization epsilon, where it differs


def keras2_key(name):
    """A layer name with tf.keras' '/' spellings folded: 'Conv/BatchNorm' -> 'conv_bn',
    'conv1/conv' -> 'conv1_conv'. Today's names are already in this form."""
    return name.replace("/BatchNorm", "_bn").replace("/", "_").lower()


_RESNET_BLOCK = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)$")
_BRANCH = {"0": "1", "1": "2a", "2": "2b", "3": "2c"}


def caffe_resnet_name(name):
    """keras-applications 1.0.8 resnet50.py: conv2_block1_1_conv -> res2a_branch2a,
    conv2_block1_0_bn -> bn2a_branch1, conv1_conv -> conv1, conv1_bn -> bn_conv1."""
    if name == "conv1_conv":
        return "conv1"
    if name == "conv1_bn":
        return "bn_conv1"
    found = _RESNET_BLOCK.match(name)
    if not found:
        return name
    stage, block, branch, kind = found.groups()
    prefix = "res" if kind == "conv" else "bn"
    return f"{prefix}{stage}{chr(ord('a') + int(block) - 1)}_branch{_BRANCH[branch]}"


TODAY = Spelling("today's names", lambda name: name)
CAFFE_RESNET50 = Spelling("the old keras-applications 1.0.8 resnet50.py names (Keras <= 2.2; "
                          "its BatchNorm epsilon 1e-3 folded in)", caffe_resnet_name,
                          bn_epsilon=1e-3)


# keras.applications' EfficientNet ImageNet files hold the ImageNet standard deviations as the
# Normalization layer's *variance*, and Keras adds Rescaling(1 / sqrt(std)) after that layer
# when it builds the model for them (weights="imagenet" only; keras-team/keras, TF issue 49930),
# so that the two divide by the std. Built with weights=None, the backbone lacks that layer:
# squaring the stored variance gives the same (x - mean) / std.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def fold_imagenet_stddev(variance):
    """The variance to store for a Normalization layer: std**2 where the file holds the
    ImageNet stds (see above), else None (nothing to fold)."""
    flat = np.asarray(variance, dtype="float64").reshape(-1)
    if flat.shape == (3,) and np.allclose(flat, IMAGENET_STDDEV_RGB, atol=1e-6):
        return (np.asarray(variance) ** 2).astype(np.asarray(variance).dtype)
    return None


def spellings(backbone_name):
    """The spellings to try for a backbone, today's first."""
    if backbone_name == "resnet50":
        return [TODAY, CAFFE_RESNET50]
    return [TODAY]


# What a file holds, told from its layer names (keras2_key form, each with its weights'
# shapes): a description and the --backbone that builds it, or None. The first that fits wins.
def _count(keys, pattern):
    return len({m.group(1) for m in (re.match(pattern, k) for k in keys) if m})


def _resnet(keys):
    if "bn_conv1" in keys and "res2a_branch2a" in keys:
        return "ResNet50 (old keras-applications 1.0.8 resnet50.py names)", "resnet50"
    if "conv2_block1_0_conv" not in keys:
        return None
    depth = {6: 50, 23: 101, 36: 152}.get(_count(keys, r"conv4_block(\d+)_1_conv$"))
    v2 = "post_bn" in keys
    name = f"ResNet{depth or ''}{'V2' if v2 else ''}"
    flag = f"resnet{depth}" if depth in (50, 101) and not v2 else None
    return name, flag


def _densenet(keys):
    if "conv2_block1_0_bn" not in keys or "conv2_block1_0_conv" in keys:
        return None
    depth = {24: 121, 32: 169, 48: 201}.get(_count(keys, r"conv4_block(\d+)_1_conv$"))
    return f"DenseNet{depth or ''}", "densenet121" if depth == 121 else None


def _efficientnet(keys):
    if "stem_conv" not in keys or "top_conv" not in keys:
        return None
    width = keys["top_conv"][0][-1] if keys["top_conv"] else None
    variant = {1408: "b2", 1536: "b3", 1792: "b4", 2048: "b5", 2304: "b6", 2560: "b7"}.get(width)
    if width == 1280:  # B0 and B1 differ in depth only
        variant = {16: "b0", 23: "b1"}.get(_count(keys, r"block(\d+[a-z])_project_conv$"))
    name = f"EfficientNet{variant.upper() if variant else ''}"
    flag = f"efficientnet{variant}" if variant in ("b0", "b1", "b2", "b3", "b4") else None
    return name, flag


def _mobilenet(keys):
    if "expanded_conv_squeeze_excite_conv" in keys:
        blocks = _count(keys, r"expanded_conv(_\d+)?_project$") or _count(
            keys, r"expanded_conv(_\d+)?_project_bn$")
        size = {11: "Small", 15: "Large"}.get(blocks)
        return (f"MobileNetV3{size or ''}",
                f"mobilenetv3{size.lower()}" if size else None)
    if "conv_dw_1" in keys:
        return "MobileNet (v1)", None
    if "block_1_expand" in keys:
        return "MobileNetV2", None
    return None


def _others(keys):
    if "block14_sepconv2" in keys:
        return "Xception", "xception"
    if "mixed10" in keys or "conv2d_93" in keys:
        return "InceptionV3", None
    if "block5_conv4" in keys:
        return "VGG19", None
    if "block5_conv3" in keys:
        return "VGG16", None
    return None


FAMILIES = (_resnet, _densenet, _efficientnet, _mobilenet, _others)


def identify(layers):
    """(the architecture the file holds or None, the --backbone that builds it or None), from
    {layer name: the shapes of its weights}."""
    keys = {keras2_key(name): shapes for name, shapes in layers.items()}
    for family in FAMILIES:
        found = family(keys)
        if found:
            return found
    return None, None
