"""Read the three data layouts into one index of (image, label) plus the label problems found.

1. garbage:  a flat folder, `img_N.jpg` beside `img_N.txt` holding "img_N.jpg, <label id>", and
             optionally `garbage_classify_rule.json` ({"0": "其他垃圾/一次性快餐盒", ...}).
2. folders:  one sub-folder per class (DIGIX / ImageNet); folder names are the class names.
3. manifest: a CSV or JSON-lines file of (relative path, label), labels as ids or names.

Every reader returns an Index: samples with integer labels, the class names (index = id), and
Problems naming the file and line of each label problem. Nothing here opens an image:
screening.py does that.
"""
import csv
import json
import os
from dataclasses import dataclass, field

from errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jxl")
RULE_FILE = "garbage_classify_rule.json"
MANIFEST_EXTENSIONS = (".csv", ".jsonl")
PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_path", "img")
LABEL_COLUMNS = ("label", "class", "category", "class_name", "label_id", "target")


class LayoutError(UserError):
    """The folder cannot be read as any layout; the message says what was expected."""


@dataclass
class Sample:
    rel: str     # path relative to the data root, '/'-separated: the sample's name everywhere
    path: str    # the file on local disk
    label: int
    digest: str = None  # sha1 of the file's bytes, set by screening


@dataclass
class Problem:
    file: str            # relative path of the file the problem is in (image, label file, ...)
    reason: str          # a short fixed phrase, counted in the summary
    detail: str = ""
    line: int = None     # line number in a label or manifest file, when there is one


@dataclass
class Index:
    layout: str
    root: str
    class_names: list
    samples: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _read_text(path):
    """Label files written on Chinese Windows are often GBK; try UTF-8 (with BOM) first."""
    raw = open(path, "rb").read()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


def _rule_names(root, problems):
    """{id: name} from garbage_classify_rule.json, or None when there is none."""
    path = os.path.join(root, RULE_FILE)
    if not os.path.exists(path):
        return None
    try:
        rule = json.loads(_read_text(path))
        return {int(k): str(v) for k, v in rule.items()}
    except (ValueError, AttributeError) as exc:
        problems.append(Problem(RULE_FILE, "unreadable class-name file", str(exc)))
        return None


def _ids_to_names(seen_ids, rule):
    """Class names indexed by id: the rule file's when given, else the ids themselves."""
    if rule:
        top = max(rule)
        return [rule.get(i, str(i)) for i in range(top + 1)]
    top = max(seen_ids) if seen_ids else -1
    return [str(i) for i in range(top + 1)]


def _report_empty_classes(index):
    counts = [0] * len(index.class_names)
    for sample in index.samples:
        counts[sample.label] += 1
    for class_id, count in enumerate(counts):
        if count == 0:
            index.problems.append(Problem("", "class has no images",
                                          f"class {class_id} ({index.class_names[class_id]})"))


def read_garbage(root):
    """The 2019 contest layout: img_N.jpg + img_N.txt ("img_N.jpg, <label>") in one folder."""
    names = sorted(os.listdir(root))
    images = {n for n in names if is_image_name(n) and os.path.isfile(os.path.join(root, n))}
    problems = []
    rule = _rule_names(root, problems)
    labelled = {}  # image name -> (label, label file, line)
    for txt in (n for n in names if n.lower().endswith(".txt")):
        for line_no, line in enumerate(_read_text(os.path.join(root, txt)).splitlines(), 1):
            if not line.strip():
                continue
            image, sep, label_text = line.partition(",")
            image, label_text = image.strip(), label_text.strip()
            if not sep or not image or not label_text:
                problems.append(Problem(txt, "unparsable label line",
                                        f"expected '<image>, <label>', got {line.strip()!r}",
                                        line_no))
                continue
            try:
                label = int(label_text)
            except ValueError:
                problems.append(Problem(txt, "label is not a class id", repr(label_text), line_no))
                continue
            if label < 0 or (rule is not None and label not in rule):
                known = f"0..{max(rule)} in {RULE_FILE}" if rule else "ids >= 0"
                problems.append(Problem(txt, "label out of range",
                                        f"{label} for {image} (expected {known})", line_no))
                continue
            if image not in images:
                problems.append(Problem(txt, "label file's image is missing", image, line_no))
                continue
            if image in labelled and labelled[image][0] != label:
                other = labelled[image]
                problems.append(Problem(txt, "image labelled twice, differently",
                                        f"{image}: {label} here, {other[0]} in {other[1]}:"
                                        f"{other[2]}", line_no))
                continue
            labelled.setdefault(image, (label, txt, line_no))
    for image in sorted(images - set(labelled)):
        problems.append(Problem(image, "image has no label",
                                f"no .txt line names it (expected {os.path.splitext(image)[0]}"
                                ".txt)"))
    class_names = _ids_to_names({lab for lab, _, _ in labelled.values()}, rule)
    samples = [Sample(name, os.path.join(root, name), labelled[name][0])
               for name in sorted(labelled)]
    index = Index("garbage", root, class_names, samples, problems)
    _report_empty_classes(index)
    return index


def read_folders(root):
    """One sub-folder per class; images anywhere below a class folder belong to it."""
    class_dirs = sorted(d for d in os.listdir(root)
                        if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    index = Index("folders", root, class_dirs)
    for name in sorted(os.listdir(root)):
        if is_image_name(name) and os.path.isfile(os.path.join(root, name)):
            index.problems.append(Problem(name, "image has no label",
                                          "it lies beside the class folders, not in one"))
    for class_id, class_dir in enumerate(class_dirs):
        for dirpath, dirs, files in os.walk(os.path.join(root, class_dir)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if is_image_name(name):
                    full = os.path.join(dirpath, name)
                    rel = os.path.relpath(full, root).replace(os.sep, "/")
                    index.samples.append(Sample(rel, full, class_id))
    _report_empty_classes(index)
    return index


def _manifest_rows(path):
    """Yield (line number, path text, label text) from a CSV (header optional) or JSON lines."""
    text = _read_text(path)
    if path.lower().endswith(".jsonl"):
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                path_key = next(k for k in PATH_COLUMNS if k in row)
                label_key = next(k for k in LABEL_COLUMNS if k in row)
                yield line_no, str(row[path_key]), str(row[label_key])
            except (ValueError, StopIteration, TypeError):
                yield line_no, None, line.strip()
        return
    rows = list(csv.reader(text.splitlines()))
    start, path_col, label_col = 0, 0, 1
    if rows:
        header = [c.strip().lower() for c in rows[0]]
        if any(c in PATH_COLUMNS for c in header) and any(c in LABEL_COLUMNS for c in header):
            path_col = next(i for i, c in enumerate(header) if c in PATH_COLUMNS)
            label_col = next(i for i, c in enumerate(header) if c in LABEL_COLUMNS)
            start = 1
    for line_no, row in enumerate(rows[start:], start + 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) <= max(path_col, label_col):
            yield line_no, None, ",".join(row)
            continue
        yield line_no, row[path_col].strip(), row[label_col].strip()


def read_manifest(root, manifest):
    """(relative path, label) rows; all-integer labels are ids, anything else are class names."""
    manifest_rel = os.path.relpath(manifest, root).replace(os.sep, "/")
    problems, rows = [], []
    for line_no, rel, label in _manifest_rows(manifest):
        if rel is None or not label:
            problems.append(Problem(manifest_rel, "unparsable label line",
                                    f"expected '<path>, <label>', got {label!r}", line_no))
        else:
            rel = rel.replace("\\", "/")
            rows.append((line_no, rel[2:] if rel.startswith("./") else rel, label))
    numeric = all(label.lstrip("-").isdigit() for _, _, label in rows)
    rule = _rule_names(root, problems) if numeric else None
    if numeric:
        class_names = _ids_to_names({int(label) for _, _, label in rows if int(label) >= 0}, rule)
    else:
        class_names = sorted({label for _, _, label in rows})
    ids = {name: i for i, name in enumerate(class_names)}
    index = Index("manifest", root, class_names, problems=problems)
    seen = set()
    for line_no, rel, label in rows:
        class_id = int(label) if numeric else ids[label]
        full = os.path.join(root, *rel.split("/"))
        if rel.startswith("/") or ".." in rel.split("/"):
            problems.append(Problem(manifest_rel, "path outside the data folder", rel, line_no))
        elif class_id < 0 or class_id >= len(class_names):
            problems.append(Problem(manifest_rel, "label out of range", f"{label} for {rel}",
                                    line_no))
        elif not os.path.isfile(full):
            problems.append(Problem(manifest_rel, "label file's image is missing", rel, line_no))
        elif rel in seen:
            problems.append(Problem(manifest_rel, "image listed twice", rel, line_no))
        else:
            seen.add(rel)
            index.samples.append(Sample(rel, full, class_id))
    _report_empty_classes(index)
    return index


def find_manifest(root):
    candidates = sorted(n for n in os.listdir(root)
                        if n.lower().endswith(MANIFEST_EXTENSIONS)
                        and os.path.isfile(os.path.join(root, n)))
    return os.path.join(root, candidates[0]) if len(candidates) == 1 else None


def detect_layout(root):
    """'manifest', 'garbage' or 'folders', from what the folder holds; LayoutError if none fits."""
    names = os.listdir(root)
    if find_manifest(root):
        return "manifest"
    has_txt = any(n.lower().endswith(".txt") for n in names)
    if has_txt and any(is_image_name(n) for n in names):
        return "garbage"
    if any(os.path.isdir(os.path.join(root, n)) and not n.startswith(".") for n in names):
        return "folders"
    raise LayoutError(
        f"cannot tell how the data in {root} is laid out: expected image files with .txt label "
        "files beside them (garbage layout), one sub-folder per class, or one manifest "
        "(.csv / .jsonl of path,label). Pass --data_format=garbage|folders|manifest to choose.")


def read_index(root, layout="auto", manifest=None):
    """Read `root` in the given layout (or the detected one) and return its Index."""
    if not os.path.isdir(root):
        raise LayoutError(f"data folder not found: {root}")
    if manifest:
        layout = "manifest"
    elif layout == "auto":
        layout = detect_layout(root)
    if layout == "garbage":
        return read_garbage(root)
    if layout == "folders":
        return read_folders(root)
    if layout == "manifest":
        manifest = manifest or find_manifest(root)
        if manifest and not os.path.isabs(manifest):
            manifest = os.path.join(root, manifest)
        if not manifest or not os.path.isfile(manifest):
            raise LayoutError(f"--data_format=manifest: no single .csv/.jsonl manifest in {root}; "
                              "name it with --manifest=<file>")
        return read_manifest(root, manifest)
    raise LayoutError(f"unknown data format {layout!r}: use auto, garbage, folders or manifest")


def read_unlabelled(root):
    """Every image file below `root`, in path order, as one class: images to predict."""
    if not os.path.isdir(root):
        raise LayoutError(f"image folder not found: {root}")
    samples = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if is_image_name(name):
                path = os.path.join(folder, name)
                samples.append(Sample(os.path.relpath(path, root).replace(os.sep, "/"), path, 0))
    if not samples:
        raise LayoutError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) below {root}")
    return Index("unlabelled", root, ["unlabelled"], samples)
