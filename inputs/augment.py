"""Augmentation by preset (`--augment none|light|standard|strong`) with per-op overrides.

Image ops are Keras 3 preprocessing layers run on whole batches inside tf.data (each image gets
its own random draw). CutMix and MixUp act on a batch with one-hot labels and give soft labels
that still sum to 1; per batch, CutMix runs with probability `cutmix_prob`, else MixUp with
probability `mixup_prob`, else neither (the Keras layers have no probability of their own).
"""
import keras
import tensorflow as tf

PRESETS = {
    "none": {},
    "light": {"flip": "horizontal", "zoom": 0.1, "shift": 0.05},
    "standard": {"flip": "horizontal", "rotation": 15.0, "zoom": 0.15, "shift": 0.1,
                 "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02},
    "strong": {"flip": "horizontal", "rotation": 30.0, "zoom": 0.25, "shift": 0.15,
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


def image_layers(settings, seed=None):
    """A keras.Sequential of the per-image ops (float 0..255 images), or None if there are none."""
    value_range = (0, 255)
    layers = []
    if FLIPS[settings["flip"]]:
        layers.append(keras.layers.RandomFlip(FLIPS[settings["flip"]], seed=seed))
    if settings["rotation"]:
        layers.append(keras.layers.RandomRotation(settings["rotation"] / 360.0,
                                                  fill_mode="constant", seed=seed))
    if settings["zoom"]:
        layers.append(keras.layers.RandomZoom(settings["zoom"], fill_mode="constant", seed=seed))
    if settings["shift"]:
        layers.append(keras.layers.RandomTranslation(settings["shift"], settings["shift"],
                                                     fill_mode="constant", seed=seed))
    if settings["brightness"]:
        layers.append(keras.layers.RandomBrightness(settings["brightness"],
                                                    value_range=value_range, seed=seed))
    if settings["contrast"]:
        layers.append(keras.layers.RandomContrast(settings["contrast"], value_range=value_range,
                                                  seed=seed))
    if settings["saturation"]:
        s = min(settings["saturation"], 1.0) / 2
        layers.append(keras.layers.RandomSaturation((0.5 - s, 0.5 + s), value_range=value_range,
                                                    seed=seed))
    if settings["hue"]:
        layers.append(keras.layers.RandomHue(settings["hue"], value_range=value_range, seed=seed))
    return keras.Sequential(layers, name="augment") if layers else None


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
