"""Real images for the tests: scikit-learn's bundled handwritten digits written as files, and
the broken files users really bring (truncated, renamed text, empty, odd encodings, huge)."""
import io
import json
import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

_DIGITS = None


def digit_image(i, size=24):
    """Digit number `i` of the bundled set as an RGB PIL image, and its label."""
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = load_digits()
    i %= len(_DIGITS.target)
    pixels = (_DIGITS.images[i] * (255.0 / 16.0)).astype(np.uint8)
    image = Image.fromarray(pixels).resize((size, size), Image.BILINEAR).convert("RGB")
    return image, int(_DIGITS.target[i])


def encode(image, fmt="JPEG", **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_garbage_layout(root, items, rule=None):
    """items: [(file name, bytes, label)] -> img files + .txt label files (+ the rule file)."""
    for name, data, label in items:
        write(os.path.join(root, name), data)
        stem = os.path.splitext(name)[0]
        write(os.path.join(root, stem + ".txt"), f"{name}, {label}\n".encode())
    if rule is not None:
        write(os.path.join(root, "garbage_classify_rule.json"),
              json.dumps(rule, ensure_ascii=False).encode())


def broken_files(size=24):
    """{file name: (bytes, expected screening reason or None when usable)}."""
    base, _ = digit_image(0, size)
    jpeg = encode(base)
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    wide16 = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257))
    huge = Image.new("1", (20000, 20000))  # 400 megapixels, a few kB as PNG
    return {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt image"),
        "text.jpg": (b"this is a text file with a .jpg name\n", "not an image"),
        "empty.jpg": (b"", "empty file"),
        "alpha.png": (encode(rgba, "PNG"), None),
        "deep16.png": (encode(wide16, "PNG"), None),
        "gray.jpg": (encode(base.convert("L")), None),
        "cmyk.jpg": (encode(base.convert("CMYK")), None),
        "anim.gif": (encode(base, "GIF"), None),
        "photo.webp": (encode(base, "WEBP"), None),
        "scan.tiff": (encode(base, "TIFF"), "converted"),
        "huge.png": (encode(huge, "PNG"), "image too large"),
        "tiny.png": (encode(base.resize((3, 3)), "PNG"), "image too small"),
    }
