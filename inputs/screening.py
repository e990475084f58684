"""Open every image once, with the pipeline's own decoder, before training starts.

Images the decoder cannot use are either converted (PIL can read them: TIFF, odd encodings) into
a cache folder the pipeline reads, or set aside with the reason: empty, not an image, truncated
or corrupt, absurdly large (decompression bombs are never decoded) or tiny. Exact duplicates
(same bytes) keep one copy, so a split never puts the same image in both train and validation
(an explicit --val_data_url is screened on its own, not against the training set); copies with
conflicting labels are all set aside. Training then never meets a file it cannot read.
"""
import collections
import hashlib
import io
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import tensorflow as tf
from PIL import Image
from tqdm import tqdm

import obs_utils
from errors import UserError
from serving import images

from .layouts import Problem
from .preprocess import decode_image

log = logging.getLogger("inputs")

MAX_PIXELS = 64_000_000   # larger is a scan gone wrong, or a decompression bomb
MIN_SIDE = 8              # smaller carries no usable picture


class DataError(UserError):
    """Too little usable data remains: training cannot start."""


# What serving's check recognises, and TIFF (converted for training, refused by the service).
SIGNATURES = {**images.SIGNATURES, b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _first_line(exc):
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


def _inspect(sample, convert_dir, max_pixels, min_side):
    """(usable Sample or None, Problem or None, sha1 of the bytes or None) for one image."""
    try:
        data = open(sample.path, "rb").read()
    except OSError as exc:
        return None, Problem(sample.rel, "unreadable file", _first_line(exc)), None
    if not data:
        return None, Problem(sample.rel, "empty file", "0 bytes"), None
    digest = hashlib.sha1(data).hexdigest()
    header = None
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            header = (probe.format, probe.size)
    except Image.DecompressionBombError as exc:  # PIL's own, stricter-than-ours limit
        return None, Problem(sample.rel, "image too large", _first_line(exc)), digest
    except Exception:  # noqa: BLE001 - PIL failing is only a hint; TF decides below
        pass
    if header:
        (width, height) = header[1]
        if width * height > max_pixels:
            return None, Problem(sample.rel, "image too large",
                                 f"{width}x{height} pixels (limit {max_pixels:,})"), digest
        if min(width, height) < min_side:
            return None, Problem(sample.rel, "image too small",
                                 f"{width}x{height} pixels (minimum side {min_side})"), digest
    try:
        decode_image(data)
        return sample, None, digest
    except tf.errors.OpError as exc:
        tf_error = _first_line(exc).split("}}")[-1].strip()
    if header is None:
        announced = images.sniff(data, SIGNATURES)
        if announced:  # starts like an image, but not even its header reads: cut off early
            return None, Problem(sample.rel, "truncated or corrupt image",
                                 f"{announced}: {tf_error}"), digest
        return None, Problem(sample.rel, "not an image", tf_error), digest
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
        os.makedirs(convert_dir, exist_ok=True)
        target = os.path.join(convert_dir, f"{digest}.png")
        if not os.path.exists(target):
            obs_utils.write_bytes(target, _png_bytes(rgb))
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the file is broken
        return None, Problem(sample.rel, "truncated or corrupt image",
                             f"{header[0]}: {_first_line(exc)}"), digest
    return (replace(sample, path=target),
            Problem(sample.rel, "converted", f"{header[0]} that TensorFlow cannot decode "
                                             f"({tf_error}); read from {target}"), digest)


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def screen(index, convert_dir, max_pixels=MAX_PIXELS, min_side=MIN_SIDE, workers=None,
           drop_duplicates=True):
    """Decode every sample of `index`; returns (usable samples, problems found), the problems
    including those the layout reader found. Converted images stay usable; repeated images
    are dropped unless drop_duplicates=False (images to predict: each gets its answer)."""
    workers = workers or min(32, 2 * (os.cpu_count() or 1))
    usable, problems = [], list(index.problems)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda s: _inspect(s, convert_dir, max_pixels, min_side),
                           index.samples)
        for sample, problem, digest in tqdm(results, total=len(index.samples), unit="img",
                                            desc="screening images", file=sys.stderr,
                                            mininterval=0.5 if sys.stderr.isatty() else 15,
                                            disable=len(index.samples) < 200):
            if problem is not None:
                problems.append(problem)
            if sample is not None:
                usable.append(replace(sample, digest=digest))
    if not drop_duplicates:
        return sorted(usable, key=lambda s: s.rel), problems
    return _drop_duplicates(usable, index.class_names, problems), problems


def _drop_duplicates(samples, class_names, problems):
    groups = collections.defaultdict(list)
    for sample in samples:
        groups[sample.digest].append(sample)
    kept = []
    for group in groups.values():
        group.sort(key=lambda s: s.rel)
        labels = {s.label for s in group}
        if len(labels) > 1:
            names = ", ".join(f"{s.rel} ({class_names[s.label]})" for s in group)
            for sample in group:
                problems.append(Problem(sample.rel, "duplicate with conflicting labels", names))
            continue
        kept.append(group[0])
        for sample in group[1:]:
            problems.append(Problem(sample.rel, "duplicate image", f"same bytes as {group[0].rel}"))
    kept.sort(key=lambda s: s.rel)
    return kept


def class_counts(samples, num_classes):
    counts = [0] * num_classes
    for sample in samples:
        counts[sample.label] += 1
    return counts


def summarize(index, usable, problems):
    """The report: counts per reason, per class, and every problem with file and line."""
    reasons = collections.Counter(p.reason for p in problems)
    counts = class_counts(usable, len(index.class_names))
    return {
        "layout": index.layout, "data_root": index.root,
        "labelled_images": len(index.samples), "usable_images": len(usable),
        "problem_counts": dict(sorted(reasons.items())),
        "class_counts": {f"{i} {name}": n for i, (name, n) in
                         enumerate(zip(index.class_names, counts))},
        "problems": [{"file": p.file, "line": p.line, "reason": p.reason, "detail": p.detail}
                     for p in problems],
    }


def log_summary(report, report_url=None):
    log.info("data: %s layout in %s: %d %s, %d usable", report["layout"], report["data_root"],
             report["labelled_images"], "images" if report["layout"] == "unlabelled"
             else "labelled images", report["usable_images"])
    for reason, count in report["problem_counts"].items():
        example = next(p for p in report["problems"] if p["reason"] == reason)
        where = example["file"] + (f":{example['line']}" if example["line"] else "")
        log.warning("  %-34s %6d  (e.g. %s %s)", reason, count, where, example["detail"])
    cells = [f"{name}: {n}" for name, n in report["class_counts"].items()]
    for start in range(0, len(cells), 4):
        log.info("  classes  %s", "   ".join(cells[start:start + 4]))
    if report_url:
        log.info("  full report: %s", report_url)


def write_report(url, report):
    obs_utils.write_text(url, json.dumps(report, indent=1, ensure_ascii=False))


def check_enough(usable, class_names, report_url, min_images=10):
    """Stop with one clear message when too little usable data remains to train."""
    counts = class_counts(usable, len(class_names))
    populated = sum(1 for n in counts if n > 0)
    if len(usable) < min_images or populated < 2:
        raise DataError(f"too little usable data to train: {len(usable)} usable images in "
                        f"{populated} class{'' if populated == 1 else 'es'} (need at least {min_images} images and 2 "
                        f"classes); see {report_url} for what was set aside and why")
