"""Class probabilities for a list of images, from a model of any of the forms a run leaves: the
Keras model in memory (through the evaluation pipeline), an exported package (its serving
signature on the files' bytes: exactly what the deployed service computes), or a weights file
with the run_config.json and labels.json of its run. Too many images x classes to hold come
back as each image's best classes (evaluation/scores.py)."""
import json
import logging
import os

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import obs_utils
from errors import UserError
from inputs import label_map, pipeline
from inputs import tta as tta_views
from models import build, run_weights
from serving import packages

from . import scores

log = logging.getLogger("evaluation")


class ModelNotFound(UserError):
    """--eval_model names nothing that can be evaluated; the message says what was expected."""


def keras_probabilities(model, samples, input_size, resize_mode, batch_size=64, tta="none"):
    """Probabilities [N, classes] of a Keras model on `samples`, in order (or their
    scores.TopScores when too many to hold): the mean over the `tta` views (inputs/tta.py), as
    the package exported with that --tta serves them."""
    classes = model.output_shape[-1]
    ds = pipeline.eval_dataset(samples, classes, batch_size, input_size, resize_mode)

    def predict(pixels):
        views = tta_views.views(pixels, input_size, tta)
        outputs = model(tf.concat(views, axis=0), training=False)
        return tta_views.mean_over_views(outputs, tf.shape(pixels)[0], len(views)).numpy()

    kept = scores.Collector(len(samples), classes)
    for x, y in tqdm(ds, total=-(-len(samples) // batch_size), unit="batch", desc="evaluating"):
        kept.add(predict(x), np.argmax(y.numpy(), axis=1))
    return kept.result()


def saved_model_probabilities(model_dir, paths, batch_size=64, labels=None):
    """Probabilities of an exported package's serving_default on the files' encoded bytes
    (scores.TopScores when too many to hold; `labels`, one per path, give their label_scores)."""
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    classes = int(serve.structured_outputs["probabilities"].shape[-1])
    files = (tf.data.Dataset.from_tensor_slices(list(paths)).map(tf.io.read_file)
             .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    kept, done = scores.Collector(len(paths), classes), 0
    for b in tqdm(files, total=-(-len(paths) // batch_size), unit="batch", desc="evaluating"):
        batch = serve(images=b)["probabilities"].numpy()
        kept.add(batch, None if labels is None else labels[done:done + len(batch)])
        done += len(batch)
    return kept.result()


class Predictor:
    """A model to evaluate: its class names and a function samples -> probabilities."""

    def __init__(self, class_names, probabilities, source):
        self.class_names, self.probabilities, self.source = class_names, probabilities, source


def best_weights(folder):
    """The weights file of `folder` (a run's weights/) with the highest val_acc in its name."""
    ranked = run_weights.ranked(folder)
    return os.path.join(folder, ranked[0]) if ranked else None


def _from_weights(path, batch_size):
    """A weights file of a run: the model is rebuilt from the run's run_config.json."""
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    config_path = os.path.join(run_dir, "run_config.json")
    labels_path = os.path.join(run_dir, label_map.FILE_NAME)
    if not (os.path.isfile(config_path) and os.path.isfile(labels_path)):
        raise ModelNotFound(f"{path} is a weights file, but its run's run_config.json and "
                            f"labels.json are not in {run_dir}: point --eval_model at the "
                            "run's model/ folder or keep the weights in <train_url>/weights/")
    spec = _model_spec(config_path)
    class_names = label_map.load(labels_path)
    model, _ = build.build_classifier(spec["backbone"], len(class_names), spec["input_size"],
                                      spec["dropout"], spec.get("head", "softmax"),
                                      spec.get("head_scale", 30.0), spec.get("pooling", "avg"),
                                      spec.get("embedding_dim", 0), spec.get("subcenters", 3))
    model.load_weights(path)
    log.info("evaluating %s (%s, input %d, from %s)", path, spec["backbone"],
             spec["input_size"], config_path)
    return Predictor(class_names, lambda samples: keras_probabilities(
        model, samples, spec["input_size"], spec["resize_mode"], batch_size), path)


def _model_spec(config_path):
    """What rebuilding a run's model needs, from its run_config.json: the typed config's
    model and feed parts (0.6 on), else the flags (runs of earlier versions)."""
    with open(config_path, encoding="utf-8") as f:
        saved = json.load(f)
    if "config" in saved:
        return {**saved["config"]["model"], "resize_mode": saved["config"]["feed"]["resize_mode"]}
    return saved["flags"]


def _fetch_model(url, local):
    """Copy what evaluating `url` needs into `local` (a mirror: nothing stale stays): a
    package, a run's package or best weights with its run_config.json and labels.json."""
    if not obs_utils.is_dir(url):
        obs_utils.copy(url, local)  # a weights file: its run's files are two folders up
        run_url = url.rstrip("/").rsplit("/", 2)[0]
        run_dir = os.path.dirname(os.path.dirname(local))
        for name in ("run_config.json", label_map.FILE_NAME):
            if obs_utils.exists(obs_utils.join(run_url, name)):
                obs_utils.copy(obs_utils.join(run_url, name), os.path.join(run_dir, name))
        return
    if obs_utils.exists(obs_utils.join(url, "saved_model.pb")):
        obs_utils.copy_tree(url, local, progress=False, delete=True)
        return
    for name in ("model", "weights"):  # a train_url: not its checkpoints/ nor tensorboard/
        if obs_utils.is_dir(obs_utils.join(url, name)):
            obs_utils.copy_tree(obs_utils.join(url, name), os.path.join(local, name),
                                progress=False, delete=True)
    for name in ("run_config.json", label_map.FILE_NAME):
        if obs_utils.exists(obs_utils.join(url, name)):
            obs_utils.copy(obs_utils.join(url, name), os.path.join(local, name))


def local_copy(url, cache_root):
    """A local path to the model at `url`: itself, or (obs://, s3://) its copy in the cache."""
    if not obs_utils.is_remote(url):
        return obs_utils.parse(url).path
    where = obs_utils.parse(url)
    local = os.path.join(cache_root, "models", where.bucket, where.path.strip("/"))
    _fetch_model(url, local)
    return local


def load(url, cache_root, batch_size=64):
    """--eval_model: a model/ package, a train_url holding one (or else its best weights), or
    a weights file; obs:// and s3:// are copied to the cache first."""
    local = local_copy(url, cache_root)
    if os.path.isfile(local) and local.endswith(".weights.h5"):
        return _from_weights(local, batch_size)
    if not os.path.isdir(local):
        raise ModelNotFound(f"--eval_model {url} does not exist: give a model/ folder, a "
                            "train_url, or a .weights.h5 file")
    folder = packages.package_in(local)
    if folder:
        class_names = label_map.load(os.path.join(folder, label_map.FILE_NAME))
        log.info("evaluating the package %s through its serving signature", folder)
        return Predictor(class_names, lambda samples: saved_model_probabilities(
            folder, [s.path for s in samples], batch_size, [s.label for s in samples]), folder)
    weights = best_weights(os.path.join(local, "weights")) if os.path.isdir(
        os.path.join(local, "weights")) else None
    if weights:
        return _from_weights(weights, batch_size)
    raise ModelNotFound(f"--eval_model {url} holds neither a model package (saved_model.pb) "
                        "nor weights/*.weights.h5")
