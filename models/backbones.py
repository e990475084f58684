"""The backbones: keras.applications models without their classifier, built with weights=None.

Each entry names the constructor, the normalisation the ImageNet weights were trained with (it
runs inside the model, on 0..255 input, so the exported model carries it), and the file name
keras.applications gives its "notop" weights (what pretrained/ and OBS hold).
"""
from typing import Callable, NamedTuple

import keras

from errors import UserError


class Backbone(NamedTuple):
    constructor: Callable
    normalization: str   # caffe | torch | tf | none (the model normalises itself)
    weights_file: str
    min_input: int       # smallest input side keras.applications accepts


def _eff(i):
    return Backbone(getattr(keras.applications, f"EfficientNetB{i}"), "none",
                    f"efficientnetb{i}_notop.h5", 32)


BACKBONES = {
    "resnet50": Backbone(keras.applications.ResNet50, "caffe",
                         "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", 32),
    "resnet101": Backbone(keras.applications.ResNet101, "caffe",
                          "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5", 32),
    "densenet121": Backbone(keras.applications.DenseNet121, "torch",
                            "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", 32),
    **{f"efficientnetb{i}": _eff(i) for i in range(5)},
    "mobilenetv3small": Backbone(keras.applications.MobileNetV3Small, "none",
                                 "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", 32),
    "mobilenetv3large": Backbone(keras.applications.MobileNetV3Large, "none",
                                 "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", 32),
    "xception": Backbone(keras.applications.Xception, "tf",
                         "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", 71),
}


def get(name):
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(f"--backbone={name!r}: use one of {', '.join(BACKBONES)}") from None


def build(name, input_size):
    """The backbone without top, random weights, on float input of the given size (0..255 for
    'none' models, already normalised for the others)."""
    spec = get(name)
    if input_size < spec.min_input:
        raise UserError(f"--input_size={input_size} is too small for {name}: at least "
                         f"{spec.min_input}")
    kwargs = {"include_top": False, "weights": None, "input_shape": (input_size, input_size, 3)}
    if name.startswith("mobilenetv3"):
        kwargs["include_preprocessing"] = True
    return spec.constructor(**kwargs)
