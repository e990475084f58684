"""The built-in demo data set: scikit-learn's bundled handwritten digits (real scans, 1,797 images,
10 classes), written in the garbage-classification layout so the demo runs the real code path.

Each 8x8, 17-level scan is scaled up to `size` pixels and saved as `img_N.jpg` beside `img_N.txt`
("img_N.jpg, <label>"), with `garbage_classify_rule.json` naming the classes in "<category>/<item>"
form (Chinese names, as in the contest's file), so the demo exercises every part of that format.
"""
import json
import os

import numpy as np
from PIL import Image

CLASS_NAMES = {
    0: "偶数/零", 1: "奇数/一", 2: "偶数/二", 3: "奇数/三", 4: "偶数/四",
    5: "奇数/五", 6: "偶数/六", 7: "奇数/七", 8: "偶数/八", 9: "奇数/九",
}


def write_digits(folder, size=32, limit=None):
    """Write the digits into `folder` (created) and return it; a finished folder is reused."""
    from sklearn.datasets import load_digits  # only the demo needs scikit-learn

    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        return folder
    os.makedirs(folder, exist_ok=True)
    digits = load_digits()
    count = len(digits.target) if limit is None else min(limit, len(digits.target))
    for i in range(count):
        pixels = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
        image = Image.fromarray(pixels).resize((size, size), Image.BILINEAR)
        image.convert("RGB").save(os.path.join(folder, f"img_{i}.jpg"), quality=95)
        with open(os.path.join(folder, f"img_{i}.txt"), "w", encoding="utf-8") as f:
            f.write(f"img_{i}.jpg, {int(digits.target[i])}\n")
    with open(os.path.join(folder, "garbage_classify_rule.json"), "w", encoding="utf-8") as f:
        json.dump({str(k): v for k, v in CLASS_NAMES.items()}, f, ensure_ascii=False, indent=1)
    open(marker, "w").close()
    return folder
