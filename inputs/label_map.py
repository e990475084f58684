"""The label map (class id -> name): decided once from the data, saved as labels.json beside the
outputs, and read back by evaluation, export and serving, so ids never shift between them."""
import json
from dataclasses import dataclass

import obs_utils
from errors import UserError
from serving import levels as label_levels

FILE_NAME = "labels.json"


def to_json(class_names):
    return json.dumps({str(i): name for i, name in enumerate(class_names)}, ensure_ascii=False,
                      indent=1)


def from_json(text, where):
    try:
        mapping = {int(k): str(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError) as exc:
        raise UserError(f"{where} is not a label map ({{\"0\": \"name\", ...}}): {exc}") from None
    if sorted(mapping) != list(range(len(mapping))):
        raise UserError(f"{where}: class ids must run 0..{len(mapping) - 1} without gaps")
    return [mapping[i] for i in range(len(mapping))]


def save(url, class_names):
    obs_utils.write_text(url, to_json(class_names))


def load(url):
    return from_json(obs_utils.read_text(url), url)


@dataclass
class Level:
    """A coarser level of the labels: its names and, for each class id, its id there."""
    depth: int          # 1: the coarsest
    names: list
    of_class: list


def levels(class_names, sep):
    """The coarser levels of `class_names` split at `sep` (--label_levels_sep): "可回收物/易拉罐"
    has the category "可回收物" above it; with three parts "a/b/c" the levels are "a" and
    "a/b". [] when `sep` is empty. Every name must have as many parts (else UserError)."""
    if not sep:
        return []
    try:
        found = label_levels.split(class_names, sep)
    except ValueError as exc:
        raise UserError(f"--label_levels_sep={sep!r}: {exc}; every class name needs as many "
                        "levels (or leave --label_levels_sep empty)") from None
    return [Level(depth, names, of_class) for depth, (names, of_class) in enumerate(found, 1)]
