"""Augmentation by preset (`--augment none|light|standard|strong`) with per-op overrides.

Each image gets its own random draw, inside the parallel per-image map: flip, zoom and shift
(and rotation when asked) happen inside the resize, as one resampling; brightness, contrast,
saturation and hue follow with TensorFlow's fused kernels. These are tf ops rather than Keras'
preprocessing layers, which measured several times slower in tf.data (bench/input_pipeline.py:
RandomFlip alone halved the pipeline's throughput). CutMix and
MixUp are the Keras 3 layers; they act on a batch with one-hot labels and give soft labels
that still sum to 1; per batch, CutMix runs with probability `cutmix_prob`, else MixUp with
probability `mixup_prob`, else neither (the Keras layers have no probability of their own).
"""
import math

import keras
import tensorflow as tf

PRESETS = {
    "none": {},
    "light": {"flip": "horizontal", "zoom": 0.1, "shift": 0.05},
    # No rotation nor hue in 'standard': they cost more than the rest together (a projective
    # warp and an HSV round trip per image); 'strong' and the per-op flags have them.
    "standard": {"flip": "horizontal", "zoom": 0.15, "shift": 0.1,
                 "brightness": 0.2, "contrast": 0.2, "saturation": 0.2},
    "strong": {"flip": "horizontal", "rotation": 20.0, "zoom": 0.25, "shift": 0.15,
               "brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05,
               "cutmix_prob": 0.5, "mixup_prob": 0.2},
}
DEFAULTS = {"flip": "none", "rotation": 0.0, "zoom": 0.0, "shift": 0.0, "brightness": 0.0,
            "contrast": 0.0, "saturation": 0.0, "hue": 0.0, "cutmix_prob": 0.0,
            "cutmix_alpha": 1.0, "mixup_prob": 0.0, "mixup_alpha": 0.2}
FLIPS = {"none": None, "horizontal": "horizontal", "vertical": "vertical",
         "both": "horizontal_and_vertical"}


def resolve(preset, overrides=None):
    """The preset's settings with every override that is not None applied on top."""
    if preset not in PRESETS:
        raise ValueError(f"--augment={preset!r}: use one of {', '.join(PRESETS)}")
    settings = {**DEFAULTS, **PRESETS[preset]}
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in DEFAULTS:
            raise ValueError(f"unknown augmentation setting {name!r}")
        settings[name] = value
    if settings["flip"] not in FLIPS:
        raise ValueError(f"--flip={settings['flip']!r}: use one of {', '.join(FLIPS)}")
    if settings["cutmix_prob"] + settings["mixup_prob"] > 1:
        raise ValueError("--cutmix_prob plus --mixup_prob must not exceed 1")
    return settings


def _uniform(seed, shape, low, high):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def _warp_params(settings, seeds, batch, height, width):
    """Per image, the affine map (a0, a1, a2, b0, b1, b2) from an augmented output pixel to the
    pixel it reads in the un-augmented output: flips, then rotation and zoom about the centre,
    then shift. Zoom > 1 magnifies."""
    angle = _uniform(seeds[0], [batch], -1.0, 1.0) * settings["rotation"] * math.pi / 180
    scale = 1.0 + _uniform(seeds[1], [batch], -1.0, 1.0) * settings["zoom"]
    shift_x = _uniform(seeds[2], [batch], -1.0, 1.0) * settings["shift"] * width
    shift_y = _uniform(seeds[3], [batch], -1.0, 1.0) * settings["shift"] * height
    flip = FLIPS[settings["flip"]] or ""
    flip_x = (tf.where(_uniform(seeds[4], [batch], 0.0, 1.0) < 0.5, -1.0, 1.0)
              if "horizontal" in flip else tf.ones([batch]))
    flip_y = (tf.where(_uniform(seeds[5], [batch], 0.0, 1.0) < 0.5, -1.0, 1.0)
              if "vertical" in flip else tf.ones([batch]))
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1 = cos * flip_x, -sin * flip_y
    b0, b1 = sin * flip_x, cos * flip_y
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return (a0, a1, cx - (a0 * cx + a1 * cy) - shift_x,
            b0, b1, cy - (b0 * cx + b1 * cy) - shift_y)


def _resize_geometry(height, width, size, mode):
    """(scale_x, scale_y, pad_x, pad_y) of preprocess.resize_image: output pixel q shows input
    pixel (q - pad + 0.5) / scale - 0.5, as tf.image.resize_with_pad / resize compute them."""
    out = float(size)
    if mode == "letterbox":
        ratio = tf.maximum(width / out, height / out)
        resized_w, resized_h = tf.floor(width / ratio), tf.floor(height / ratio)
        return (resized_w / width, resized_h / height,
                tf.floor((out - resized_w) / 2), tf.floor((out - resized_h) / 2))
    return out / width, out / height, 0.0, 0.0


def warp_to_size(image, size, mode, settings, seed):
    """Resize one decoded image to size x size AND flip / rotate / zoom / shift it, in a single
    bilinear resampling: the resize a pipeline needs anyway carries the augmentation.

    With no augmentation this is preprocess.resize_image's own geometry (letterbox bars
    included), so training sees what evaluation and serving see."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    scale_x, scale_y, pad_x, pad_y = _resize_geometry(height, width, size, mode)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    a0, a1, a2, b0, b1, b2 = _warp_params(settings, seeds, 1, float(size), float(size))
    # un-augmented output pixel q -> input pixel: (q - pad + 0.5) / scale - 0.5
    offset_x, offset_y = (0.5 - pad_x) / scale_x - 0.5, (0.5 - pad_y) / scale_y - 0.5
    transform = tf.stack([a0 / scale_x, a1 / scale_x, a2 / scale_x + offset_x,
                          b0 / scale_y, b1 / scale_y, b2 / scale_y + offset_y,
                          tf.zeros([1]), tf.zeros([1])], axis=1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[tf.newaxis], transforms=transform,
        output_shape=[size, size], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT")[0]
    warped = tf.clip_by_value(warped, 0.0, 255.0)
    warped.set_shape([size, size, 3])
    return warped


def crop_to_size(image, size, mode, settings, seed):
    """warp_to_size without rotation, through crop_and_resize (about 1.6x faster): the crop
    box carries the letterbox bars, the zoom, the shift and the flips."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    scale_x, scale_y, pad_x, pad_y = _resize_geometry(height, width, size, mode)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    centre, last = (size - 1) / 2, float(size - 1)
    zoom = 1.0 + _uniform(seeds[1], [], -1.0, 1.0) * settings["zoom"]
    flip = FLIPS[settings["flip"]] or ""

    def edges(shift_seed, flip_seed, flips, scale, pad, extent):
        """Input coordinates (normalised to 0..1) that output pixels 0 and size-1 read."""
        sign = (tf.where(_uniform(flip_seed, [], 0.0, 1.0) < 0.5, -1.0, 1.0)
                if flips else 1.0)
        shift = _uniform(shift_seed, [], -1.0, 1.0) * settings["shift"] * size
        plain = [centre + sign * (q - centre) / zoom - shift for q in (0.0, last)]
        return [((q - pad + 0.5) / scale - 0.5) / tf.maximum(extent - 1, 1.0) for q in plain]

    y1, y2 = edges(seeds[3], seeds[5], "vertical" in flip, scale_y, pad_y, height)
    x1, x2 = edges(seeds[2], seeds[4], "horizontal" in flip, scale_x, pad_x, width)
    box = tf.stack([y1, x1, y2, x2])[tf.newaxis]
    crop = tf.image.crop_and_resize(image[tf.newaxis], box, [0], [size, size],
                                    extrapolation_value=0.0)[0]
    crop = tf.clip_by_value(crop, 0.0, 255.0)
    crop.set_shape([size, size, 3])
    return crop


def resize_and_augment(image, size, mode, settings, seed):
    """The geometric augmentation for one decoded image, folded into its resize."""
    if settings["rotation"]:
        return warp_to_size(image, size, mode, settings, seed)
    return crop_to_size(image, size, mode, settings, seed)


def is_geometric(settings):
    return settings["flip"] != "none" or any(settings[k] for k in ("rotation", "zoom", "shift"))


def colour_jitter(image, settings, seed):
    """Brightness, contrast, saturation and hue of one float 0..255 image, each by a random
    amount within its setting. TensorFlow's fused per-image kernels (AdjustContrast,
    AdjustSaturation, AdjustHue) run several times faster than Keras' preprocessing layers,
    which rebuild each adjustment from generic ops over the whole batch."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    if settings["brightness"]:
        image = tf.image.stateless_random_brightness(image, settings["brightness"] * 255.0,
                                                     seeds[0])
    if settings["contrast"]:
        image = tf.image.stateless_random_contrast(image, 1 - settings["contrast"],
                                                   1 + settings["contrast"], seeds[1])
    if settings["saturation"]:  # saturation and hue are scale-free: 0..255 works as 0..1
        image = tf.image.stateless_random_saturation(image, 1 - settings["saturation"],
                                                     1 + settings["saturation"], seeds[2])
    if settings["hue"]:
        image = tf.image.stateless_random_hue(image, settings["hue"], seeds[3])
    return tf.clip_by_value(image, 0.0, 255.0)


def has_colour(settings):
    return any(settings[k] for k in ("brightness", "contrast", "saturation", "hue"))


def batch_mixer(settings, seed=None):
    """fn(images, one-hot labels) -> (images, soft labels) applying CutMix / MixUp per batch,
    or None when both probabilities are 0."""
    p_cut, p_mix = settings["cutmix_prob"], settings["mixup_prob"]
    if not p_cut and not p_mix:
        return None
    alpha = settings["cutmix_alpha"]
    cutmix = keras.layers.CutMix(factor=(alpha, alpha), seed=seed)  # fixed Beta(a, a), the paper's
    mixup = keras.layers.MixUp(alpha=settings["mixup_alpha"], seed=seed)

    def apply(layer, images, labels):
        out = layer({"images": images, "labels": labels}, training=True)
        return tf.cast(out["images"], images.dtype), tf.cast(out["labels"], labels.dtype)

    def mix(images, labels):
        u = tf.random.uniform([], seed=seed)
        return tf.cond(u < p_cut, lambda: apply(cutmix, images, labels),
                       lambda: tf.cond(u < p_cut + p_mix, lambda: apply(mixup, images, labels),
                                       lambda: (images, labels)))

    return mix
