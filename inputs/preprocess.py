"""The one function from encoded image bytes to the model's input tensor.

Training, evaluation, screening and the exported serving graph all call `bytes_to_input`, so
they cannot drift apart (a 2019 baseline lost 0.5 accuracy to such a drift). The output is
float32 in 0..255; the backbone's own normalisation lives inside the model.
"""
import tensorflow as tf

from errors import UserError

RESIZE_MODES = ("letterbox", "stretch")


def decode_image(image_bytes):
    """JPEG / PNG (8 or 16 bit, alpha dropped) / GIF (first frame) / BMP / WebP -> uint8 [H, W, 3]."""
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def _jpeg_ratio_branch(image_bytes, size, mode):
    """0..3 for a JPEG decode at 1/1, 1/2, 1/4 or 1/8 scale: the smallest decode that still
    covers the output (libjpeg scales in the DCT domain, far cheaper than decoding in full and
    resizing down; PIL's draft mode does the same)."""
    shape = tf.cast(tf.image.extract_jpeg_shape(image_bytes), tf.int32)
    # letterbox fits the long side to `size`; stretch needs the short side to reach it
    side = tf.reduce_max(shape[:2]) if mode == "letterbox" else tf.reduce_min(shape[:2])
    room = side // size
    return tf.where(room >= 8, 3, tf.where(room >= 4, 2, tf.where(room >= 2, 1, 0)))


def decode_for_size(image_bytes, size, mode="letterbox"):
    """decode_image, but JPEGs much larger than the output are decoded at a reduced scale."""
    def jpeg():
        branch = _jpeg_ratio_branch(image_bytes, size, mode)
        return tf.switch_case(branch, [
            lambda r=r: tf.io.decode_jpeg(image_bytes, channels=3, ratio=r) for r in (1, 2, 4, 8)])

    is_jpeg = tf.equal(tf.strings.substr(image_bytes, 0, 3), b"\xff\xd8\xff")
    image = tf.cond(is_jpeg, jpeg, lambda: decode_image(image_bytes))
    image.set_shape([None, None, 3])
    return image


def resize_image(image, size, mode="letterbox"):
    """Resize to size x size: 'letterbox' keeps the aspect ratio and pads with black (the seeds'
    choice), 'stretch' resizes plainly. Bilinear without antialiasing (Keras' own default; large
    JPEGs are already reduced by decode_for_size). Returns float32 0..255."""
    image = tf.cast(image, tf.float32)
    if mode == "letterbox":
        image = tf.image.resize_with_pad(image, size, size)
    elif mode == "stretch":
        image = tf.image.resize(image, (size, size))
    else:
        raise UserError(f"resize mode {mode!r}: use one of {RESIZE_MODES}")
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape([size, size, 3])
    return image


def bytes_to_input(image_bytes, size, mode="letterbox"):
    """Encoded bytes (a scalar string tensor) -> float32 [size, size, 3] in 0..255."""
    return resize_image(decode_for_size(image_bytes, size, mode), size, mode)
