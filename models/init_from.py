"""--init_from: start from an earlier run (its train_url, or one of its weights files), as the
AliProducts system trained in stages (a feature extractor on the classes with enough images,
then the classifier on all of them). The backbone's weights always come from that run; the
layers after it (an embedding neck, the classifier) too where they fit this job: the classifier
when both runs have the same classes (its columns matched by class name), else a new one."""
import logging
import os
from dataclasses import dataclass

import obs_utils
from errors import UserError
from inputs import label_map

from . import run_weights, weight_files

log = logging.getLogger("models")

CLASSIFIERS = ("probabilities", "cosines")  # the layers whose outputs are the classes


@dataclass
class EarlierRun:
    url: str            # as given
    weights_path: str   # the local copy of its weights file
    class_names: list   # its labels.json


def fetch(url, cache_root):
    """The earlier run at `url` (a train_url: its best weights/ file by the name's score; or
    a .weights.h5 file inside <train_url>/weights/), copied to the cache when remote."""
    if url.rstrip("/").endswith(run_weights.SUFFIX):
        weights_url = url
        run_url = url.rstrip("/").rsplit("/", 2)[0]
    else:
        run_url = url.rstrip("/")
        folder = obs_utils.join(run_url, "weights")
        names = ([n for n in obs_utils.listdir(folder) if n.endswith(run_weights.SUFFIX)]
                 if obs_utils.is_dir(folder) else [])
        if not names:
            raise UserError(f"--init_from={url}: no weights/*{run_weights.SUFFIX} there; give "
                            "the train_url of an earlier run, or one of its weights files")
        weights_url = obs_utils.join(folder, max(names, key=run_weights.score_of))
    labels_url = obs_utils.join(run_url, label_map.FILE_NAME)
    if not obs_utils.exists(weights_url) or not obs_utils.exists(labels_url):
        raise UserError(f"--init_from={url}: {weights_url} and {labels_url} must both exist "
                        "(a run's weights file lives in <train_url>/weights/)")
    path = weights_url
    if obs_utils.is_remote(weights_url):
        where = obs_utils.parse(weights_url)
        path = os.path.join(cache_root, "init_from", where.bucket, *where.path.strip("/").split("/"))
        obs_utils.copy(weights_url, path)
    return EarlierRun(url, path, label_map.load(labels_url))


def head_arrays(earlier, class_names):
    """({layer name: arrays} of the earlier run's layers after the backbone to load into this
    job's model, and a sentence for the log): the neck always; the classifier when the class
    names are the same (a softmax classifier's columns reordered when only their order
    differs)."""
    top = weight_files.read(earlier.weights_path).scopes.get("", {})
    then, chosen = earlier.class_names, {}
    for name, layer in top.items():
        if name not in CLASSIFIERS:
            chosen[name] = layer.arrays
        elif list(then) == list(class_names):
            chosen[name] = layer.arrays
        elif name == "probabilities" and sorted(then) == sorted(class_names):
            order = [then.index(c) for c in class_names]
            kernel, bias = layer.arrays
            chosen[name] = [kernel[:, order], bias[order]]
    if any(name in chosen for name in CLASSIFIERS):
        note = f"the classifier too (the same {len(class_names)} classes)"
    else:
        shared = len(set(then) & set(class_names))
        note = (f"a new classifier: this job has {len(class_names)} classes, the earlier run "
                f"{len(then)} ({shared} shared)")
    return chosen, note


def apply_head(model, arrays):
    """Load `arrays` (head_arrays) into the model's layers of the same names and shapes;
    returns the names loaded. A layer this model lacks, or of another shape, stays new."""
    loaded = []
    names = {layer.name for layer in model.layers}
    for name, values in arrays.items():
        if name not in names:
            continue
        layer = model.get_layer(name)
        if [tuple(w.shape) for w in layer.weights] == [tuple(v.shape) for v in values]:
            layer.set_weights(values)
            loaded.append(name)
    return loaded
