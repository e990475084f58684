"""Which classes a job trains on, by how many usable images each has (--min_images_per_class,
--max_images_per_class: the large-class systems' first stages trained on the classes with
enough images, and leaving the others out is reported, never silent), and a seeded cap on the
training images of big classes (--max_train_per_class, the "balance train" list: the images it
leaves out are saved with the split, so a resumed job leaves out the same ones)."""
import json
import logging
from dataclasses import replace

import numpy as np

import obs_utils

from .screening import DataError

log = logging.getLogger("inputs")

FILE_NAME = "class_counts.json"


def select_classes(samples, class_names, min_images=0, max_images=0):
    """(samples relabelled onto the kept classes, kept class names, [(name, images, reason)]
    of the classes left out): a class is kept when its count of `samples` is at least
    `min_images` and at most `max_images` (0: no limit). Kept classes keep their order."""
    counts = np.bincount([s.label for s in samples], minlength=len(class_names))
    left_out = []
    for name, count in zip(class_names, counts):
        if min_images and count < min_images:
            left_out.append((name, int(count), f"fewer than {min_images}"))
        elif max_images and count > max_images:
            left_out.append((name, int(count), f"more than {max_images}"))
    if not left_out:
        return samples, list(class_names), []
    gone = {name for name, _, _ in left_out}
    kept = [name for name in class_names if name not in gone]
    if len(kept) < 2:
        raise DataError(f"{len(kept)} of {len(class_names)} classes have between "
                        f"{min_images or 1} and {max_images or 'any number of'} usable images "
                        f"(counts range {int(counts.min())}..{int(counts.max())}): widen "
                        "--min_images_per_class / --max_images_per_class")
    ids = {name: i for i, name in enumerate(kept)}
    return ([replace(s, label=ids[class_names[s.label]]) for s in samples
             if class_names[s.label] in ids], kept, left_out)


def onto(samples, names, kept, where):
    """Another set's samples (labels into `names`, e.g. --val_data_url) on the kept classes:
    images of classes left out are dropped, with a warning."""
    ids = {name: i for i, name in enumerate(kept)}
    inside = [replace(s, label=ids[names[s.label]]) for s in samples if names[s.label] in ids]
    if len(inside) < len(samples):
        log.warning("%s: %d images of classes left out by the class-count limits are not "
                    "used", where, len(samples) - len(inside))
    return inside


def cap_per_class(train, cap, seed):
    """(kept, left out): at most `cap` training images of each class, the kept ones drawn
    with `seed` (the same images for the same seed and data); cap 0 keeps every image."""
    if not cap:
        return train, []
    rng = np.random.default_rng(seed)
    by_class = {}
    for sample in sorted(train, key=lambda s: s.rel):
        by_class.setdefault(sample.label, []).append(sample)
    kept, left_out = [], []
    for label in sorted(by_class):
        members = by_class[label]
        chosen = set(rng.permutation(len(members))[:cap].tolist()) if len(members) > cap \
            else set(range(len(members)))
        for i, sample in enumerate(members):
            (kept if i in chosen else left_out).append(sample)
    return sorted(kept, key=lambda s: s.rel), sorted(left_out, key=lambda s: s.rel)


def write_report(url, left_out, min_images, max_images, kept_count):
    """class_counts.json: the limits and every class they left out, with its image count."""
    obs_utils.write_text(url, json.dumps({
        "min_images_per_class": min_images, "max_images_per_class": max_images,
        "classes_kept": kept_count,
        "left_out": [{"class": name, "images": count, "reason": reason}
                     for name, count, reason in left_out]}, ensure_ascii=False, indent=1))


def log_left_out(left_out, kept_count, url):
    if not left_out:
        return
    images = sum(count for _, count, _ in left_out)
    examples = ", ".join(f"{name} ({count})" for name, count, _ in left_out[:5])
    log.warning("class-count limits: %d classes left out (%d images: %s%s), %d classes "
                "train%s", len(left_out), images, examples, ", ..." if len(left_out) > 5
                else "", kept_count, f"; the list is in {url}" if url else "")
