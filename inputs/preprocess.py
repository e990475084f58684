"""The one function from encoded image bytes to the model's input tensor.

Training, evaluation, screening and the exported serving graph all call `bytes_to_input`, so
they cannot drift apart (a 2019 baseline lost 0.5 accuracy to such a drift). The output is
float32 in 0..255; the backbone's own normalisation lives inside the model.
"""
import tensorflow as tf

RESIZE_MODES = ("letterbox", "stretch")


def decode_image(image_bytes):
    """JPEG / PNG (8 or 16 bit, alpha dropped) / GIF (first frame) / BMP / WebP -> uint8 [H, W, 3]."""
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def resize_image(image, size, mode="letterbox"):
    """Resize to size x size: 'letterbox' keeps the aspect ratio and pads with black (the seeds'
    choice), 'stretch' resizes plainly. Returns float32 0..255."""
    image = tf.cast(image, tf.float32)
    if mode == "letterbox":
        image = tf.image.resize_with_pad(image, size, size, antialias=True)
    elif mode == "stretch":
        image = tf.image.resize(image, (size, size), antialias=True)
    else:
        raise ValueError(f"resize mode {mode!r}: use one of {RESIZE_MODES}")
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape([size, size, 3])
    return image


def bytes_to_input(image_bytes, size, mode="letterbox"):
    """Encoded bytes (a scalar string tensor) -> float32 [size, size, 3] in 0..255."""
    return resize_image(decode_image(image_bytes), size, mode)
