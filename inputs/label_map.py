"""The label map (class id -> name): decided once from the data, saved as labels.json beside the
outputs, and read back by evaluation, export and serving, so ids never shift between them."""
import json

import obs_utils
from errors import UserError

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
