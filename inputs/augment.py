"""Augmentation by preset (`--augment none|light|standard|strong`) with per-op overrides.

Each image gets its own random draw (random_params, drawn 1,024 images at a time): flip, zoom
and shift (and rotation when asked) happen inside the resize the pipeline needs anyway;
contrast follows with TensorFlow's fused kernel, brightness, saturation and hue as one colour
matrix. These are tf ops rather than Keras' preprocessing layers, which measured several
times slower in tf.data (bench/input_pipeline.py: RandomFlip alone halved the pipeline's
throughput). CutMix and MixUp act on batches: inputs/mixing.py, with the settings resolved here.
"""
import math

import numpy as np
import tensorflow as tf

from errors import UserError

PRESETS = {
    "none": {},
    "light": {"flip": "horizontal", "zoom": 0.1, "shift": 0.05},
    # No rotation in 'standard' (a projective warp per image costs more than all the rest)
    # and no hue (colour tells some classes apart); 'strong' and the per-op flags have them.
    "standard": {"flip": "horizontal", "zoom": 0.15, "shift": 0.1,
                 "brightness": 0.2, "contrast": 0.2, "saturation": 0.2},
    "strong": {"flip": "horizontal", "rotation": 20.0, "zoom": 0.25, "shift": 0.15,
               "brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05,
               "cutmix_prob": 0.5, "mixup_prob": 0.2},
    # RandAugment (Cubuk et al. 2019) in place of the hand-set jitter: 2 of Keras' 11 ops per
    # image at its default strength, after the flip.
    "randaugment": {"flip": "horizontal", "randaugment_ops": 2, "randaugment_strength": 0.5},
    # AugMix (Hendrycks et al. 2020) after the flip: 3 chains of 1-3 of Keras' ops each, mixed
    # by Dirichlet weights and blended with the image, at Keras' default strength.
    "augmix": {"flip": "horizontal", "augmix_chains": 3, "augmix_depth": 3,
               "augmix_strength": 0.3},
}
DEFAULTS = {"flip": "none", "rotation": 0.0, "zoom": 0.0, "shift": 0.0, "brightness": 0.0,
            "contrast": 0.0, "saturation": 0.0, "hue": 0.0, "cutmix_prob": 0.0,
            "cutmix_alpha": 1.0, "mixup_prob": 0.0, "mixup_alpha": 0.2,
            "randaugment_ops": 0, "randaugment_strength": 0.5, "augmix_chains": 0,
            "augmix_depth": 3, "augmix_strength": 0.3}
FLIPS = {"none": None, "horizontal": "horizontal", "vertical": "vertical",
         "both": "horizontal_and_vertical"}


def resolve(preset, overrides=None):
    """The preset's settings with every override that is not None applied on top."""
    if preset not in PRESETS:
        raise UserError(f"--augment={preset!r}: use one of {', '.join(PRESETS)}")
    settings = {**DEFAULTS, **PRESETS[preset]}
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in DEFAULTS:
            raise UserError(f"unknown augmentation setting {name!r}")
        settings[name] = value
    if settings["flip"] not in FLIPS:
        raise UserError(f"--flip={settings['flip']!r}: use one of {', '.join(FLIPS)}")
    if settings["cutmix_prob"] + settings["mixup_prob"] > 1:
        raise UserError("--cutmix_prob plus --mixup_prob must not exceed 1")
    if settings["randaugment_ops"] < 0 or not 0 < settings["randaugment_strength"] <= 1:
        raise UserError(f"--randaugment_ops={settings['randaugment_ops']}, "
                        f"--randaugment_strength={settings['randaugment_strength']}: use 0 "
                        f"ops (off) or more, and a strength in (0, 1]")
    if (settings["augmix_chains"] < 0 or settings["augmix_depth"] < 1
            or not 0 < settings["augmix_strength"] <= 1):
        raise UserError(f"--augmix_chains={settings['augmix_chains']}, "
                        f"--augmix_depth={settings['augmix_depth']}, "
                        f"--augmix_strength={settings['augmix_strength']}: use 0 chains (off) "
                        f"or more, a depth of 1 or more, and a strength in (0, 1]")
    if settings["randaugment_ops"] and settings["augmix_chains"]:
        raise UserError("--randaugment_ops and --augmix_chains are both set: use one policy "
                        "(--augment=randaugment or --augment=augmix)")
    return settings


def random_params(settings, seed, count):
    """Every random choice for `count` images, as a dict of [count, ...] tensors. Drawn
    vectorised ahead of the per-image map, where a few dozen tiny ops per image would cost a
    sizeable share of the pipeline's CPU time. Factors are uniform within 1 +- their setting."""
    u = tf.random.stateless_uniform([count, 10], seed, minval=-1.0, maxval=1.0)
    flip = FLIPS[settings["flip"]] or ""
    never = tf.zeros([count], tf.bool)
    return {
        "zoom": 1.0 + u[:, 0] * settings["zoom"],                       # > 1 magnifies
        "shift": u[:, 1:3] * settings["shift"],                         # (y, x), share of side
        "flip": tf.stack([u[:, 3] < 0 if "vertical" in flip else never,
                          u[:, 4] < 0 if "horizontal" in flip else never], axis=1),  # (y, x)
        "angle": u[:, 5] * (settings["rotation"] * math.pi / 180),
        "contrast": 1.0 + u[:, 6] * settings["contrast"],
        "colour": colour_matrix(1.0 + u[:, 7] * settings["brightness"],
                                1.0 + u[:, 8] * settings["saturation"],
                                u[:, 9] * settings["hue"]),
    }


def param_stream(settings, seed, chunk=1024):
    """Endless dataset of one image's random_params per element, drawn `chunk` at a time."""
    return (tf.data.Dataset.random(seed=seed).batch(2)
            .map(lambda pair: random_params(settings, pair, chunk)).unbatch())


def _fitted_size(source, size, mode):
    """(height, width) of the picture inside preprocess.resize_image's output for a source of
    (height, width), as tf.image.resize_with_pad computes it; the whole square for stretch."""
    if mode == "letterbox":
        return tf.floor(source / tf.reduce_max(source / size))
    return tf.constant([size, size], tf.float32)


def _resize_geometry(source, size, mode):
    """(scale, pad), each a (y, x) pair, of preprocess.resize_image: output pixel q shows
    input pixel (q - pad + 0.5) / scale - 0.5."""
    fitted = _fitted_size(source, size, mode)
    return fitted / source, tf.floor((size - fitted) / 2)


def warp_to_size(image, size, mode, params):
    """Resize one decoded image to size x size AND flip / rotate / zoom / shift it, in a single
    bilinear resampling (flips, then rotation and zoom about the centre, then shift): the
    geometry of place_to_size, plus rotation.

    With no augmentation this is preprocess.resize_image's own geometry (letterbox bars
    included), so training sees what evaluation and serving see."""
    scale, pad = _resize_geometry(tf.cast(tf.shape(image)[:2], tf.float32), size, mode)
    (scale_y, scale_x), (pad_y, pad_x) = tf.unstack(scale), tf.unstack(pad)
    sign_y, sign_x = tf.unstack(tf.where(params["flip"], -1.0, 1.0))
    shift_y, shift_x = tf.unstack(params["shift"] * size)
    cos = tf.cos(params["angle"]) / params["zoom"]
    sin = tf.sin(params["angle"]) / params["zoom"]
    # augmented output pixel -> un-augmented output pixel: (a0 x + a1 y + a2, b0 x + b1 y + b2),
    # about the centre c, shifted in output pixels: u = A (x - c - shift) + c
    a0, a1, b0, b1 = cos * sign_x, -sin * sign_y, sin * sign_x, cos * sign_y
    centre = (size - 1) / 2
    a2 = centre - a0 * (centre + shift_x) - a1 * (centre + shift_y)
    b2 = centre - b0 * (centre + shift_x) - b1 * (centre + shift_y)
    # un-augmented output pixel q -> input pixel: (q - pad + 0.5) / scale - 0.5
    offset_x, offset_y = (0.5 - pad_x) / scale_x - 0.5, (0.5 - pad_y) / scale_y - 0.5
    transform = tf.stack([a0 / scale_x, a1 / scale_x, a2 / scale_x + offset_x,
                          b0 / scale_y, b1 / scale_y, b2 / scale_y + offset_y, 0.0, 0.0])
    warped = tf.raw_ops.ImageProjectiveTransformV3(  # bilinear: stays within 0..255
        images=tf.cast(image, tf.float32)[tf.newaxis], transforms=transform[tf.newaxis],
        output_shape=[size, size], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT")[0]
    warped.set_shape([size, size, 3])
    return warped


def picture_coverage(image, size, mode, params):
    """[size, size, 1]: how much of each output pixel of warp_to_size is picture (1 inside, 0
    in the letterbox bars and outside the turned picture, fractions along its edge)."""
    ones = tf.ones(tf.concat([tf.shape(image)[:2], [1]], 0), tf.float32)
    return tf.reduce_mean(warp_to_size(tf.tile(ones, [1, 1, 3]), size, mode, params),
                          axis=-1, keepdims=True)


def place_to_size(image, size, mode, settings, params):
    """warp_to_size without rotation, from the plain bilinear resize (on CPU about 3x faster
    than crop_and_resize, which samples pixel by pixel), returned as (the part that shows,
    its [3, 2] padding to size x size). The image is flipped, scaled to its letterbox size
    times the zoom and placed at the shifted centre of the canvas, to the whole pixel. Flips
    and crops act on the small uint8 source, and the caller pads last, so that every float
    pass (resize, colour) covers only the pixels that show."""
    flip = FLIPS[settings["flip"]] or ""
    if "vertical" in flip:
        image = tf.cond(params["flip"][0], lambda: tf.reverse(image, [0]), lambda: image)
    if "horizontal" in flip:
        image = tf.cond(params["flip"][1], lambda: tf.reverse(image, [1]), lambda: image)
    # rows and columns travel together as (y, x) pairs
    shape = tf.shape(image)[:2]
    source = tf.cast(shape, tf.float32)
    fitted = _fitted_size(source, size, mode)
    new = tf.maximum(1, tf.cast(tf.round(fitted * params["zoom"]), tf.int32))
    shift = tf.cast(tf.round(params["shift"] * size), tf.int32)
    start = tf.clip_by_value((size - new) // 2 + shift, 1 - new, size - 1)  # >= 1 row shows
    first, last = tf.maximum(0, -start), tf.minimum(new, size - start)  # scaled rows that show
    # the source rows behind them, to the whole pixel
    per_row = source / tf.cast(new, tf.float32)
    top_left = tf.cast(tf.floor(tf.cast(first, tf.float32) * per_row), tf.int32)
    bottom_right = tf.minimum(shape, tf.cast(tf.math.ceil(tf.cast(last, tf.float32) * per_row),
                                             tf.int32))
    crop = tf.slice(image, tf.concat([top_left, [0]], 0),
                    tf.concat([tf.maximum(1, bottom_right - top_left), [3]], 0))
    shows = tf.image.resize(crop, last - first)
    before = tf.maximum(0, start)
    padding = tf.concat([tf.stack([before, size - before - (last - first)], axis=1), [[0, 0]]], 0)
    return shows, padding


def augment_image(image, size, mode, settings, params):
    """One decoded image -> the float [size, size, 3] training input with its geometric and
    colour augmentation. Colour leaves the letterbox bars black, as serving sees them."""
    if settings["rotation"]:
        warped = warp_to_size(image, size, mode, params)
        if not has_colour(settings):
            return warped
        return colour_jitter(warped, settings, params,
                             coverage=picture_coverage(image, size, mode, params))
    shows, padding = place_to_size(image, size, mode, settings, params)
    if has_colour(settings):
        shows = colour_jitter(shows, settings, params)
    placed = tf.pad(shows, padding)
    placed.set_shape([size, size, 3])
    return placed


def is_geometric(settings):
    return settings["flip"] != "none" or any(settings[k] for k in ("rotation", "zoom", "shift"))


# NTSC YIQ: Y is the luma, I and Q carry the colour. Row vectors: yiq = rgb @ _RGB_TO_YIQ.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], dtype=np.float32).T
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def colour_matrix(brightness, saturation, hue):
    """[..., 3, 3] matrices (rgb_row @ matrix) scaling the luma by `brightness`, the colour by
    `saturation` and turning the hue by `hue` turns: saturation 0 is grey, hue 0.5 opposite."""
    angle = hue * 2.0 * math.pi
    cos, sin = saturation * tf.cos(angle), saturation * tf.sin(angle)
    zero, one = tf.zeros_like(cos), tf.ones_like(cos)
    turn = tf.stack([tf.stack([one, zero, zero], -1), tf.stack([zero, cos, sin], -1),
                     tf.stack([zero, -sin, cos], -1)], -2)
    return _RGB_TO_YIQ @ (brightness[..., tf.newaxis, tf.newaxis] * turn) @ _YIQ_TO_RGB


def colour_jitter(image, settings, params, coverage=None):
    """Brightness, contrast, saturation and hue of one float 0..255 image, as torchvision's
    ColorJitter defines them: contrast by TensorFlow's fused per-channel kernel, the rest as
    one colour matrix in YIQ space (tf.image's HSV round trip for saturation alone costs 6x
    more). Brightness scales, as ImageDataGenerator's brightness_range does.

    `coverage` ([H, W, 1], the warp path's picture_coverage): the picture alone is jittered,
    contrast about its own mean (the bars would pull it down), and the bars are black after."""
    if coverage is not None:
        image = image / tf.maximum(coverage, 1e-6)  # the bilinear edge, un-darkened
    if settings["contrast"] and coverage is None:
        image = tf.image.adjust_contrast(image, params["contrast"])
    elif settings["contrast"]:
        mean = tf.reduce_sum(image * coverage, axis=[0, 1]) / tf.maximum(
            tf.reduce_sum(coverage), 1e-6)
        image = (image - mean) * params["contrast"] + mean
    if settings["brightness"] or settings["saturation"] or settings["hue"]:
        image = tf.reshape(tf.reshape(image, [-1, 3]) @ params["colour"], tf.shape(image))
    image = tf.clip_by_value(image, 0.0, 255.0)
    return image if coverage is None else image * coverage


def has_colour(settings):
    return any(settings[k] for k in ("brightness", "contrast", "saturation", "hue"))


def policy(settings, seed):
    """RandAugment or AugMix (inputs/policies.py: on Keras' 11 ops, each image its own draw)
    as a function of one float 0..255 image, or None when neither is asked for
    (--randaugment_ops and --augmix_chains both 0). Their draws come from seeded generators,
    a state: the same images come out where the calls come in the same order (the pipeline's
    --deterministic). Keras' ops rather than our own, unlike the jitter above: they are tested
    ops. They act on the whole square, so letterbox bars move and may brighten with the
    picture. Their cost: bench/input_pipeline.py --presets=standard,randaugment,augmix."""
    if not settings["randaugment_ops"] and not settings["augmix_chains"]:
        return None
    from inputs import policies  # Keras: the training process has it; this module needs TF

    if settings["augmix_chains"]:
        return policies.augmix(settings["augmix_chains"], settings["augmix_depth"],
                               settings["augmix_strength"], seed)
    return policies.randaugment(settings["randaugment_ops"], settings["randaugment_strength"],
                                seed)
