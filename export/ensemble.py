"""Up to three trained models as one SavedModel: `serving_default` takes encoded image bytes,
as every package's does, and returns the members' weighted mean probability, each member's the
mean over the test-time views (inputs/tta.py). Each member decodes and resizes the images to
its own input size (members of one size share the decode), then runs all views of the batch in
one call of its `pixels` signature. Members must name the same classes; one listing them in
another order has its columns put in the first member's order.

The members are model/ packages (or train_urls holding one), loaded as SavedModels: their
variables are saved again inside the ensemble, so the result is a package like any other.
"""
import json
import logging
import os
from dataclasses import dataclass

import tensorflow as tf

from errors import UserError
from inputs import label_map
from inputs import tta as views_of
from inputs.preprocess import bytes_to_input
from serving import packages

from .saved_model import NEWER_THAN_THE_RUNTIME, drop_ops

log = logging.getLogger("export")

MAX_MEMBERS = 3  # the contest's rule, and what a 200 ms budget per image allows
FILE_NAME = "ensemble.json"  # in the package: the members, their weights and the views


class EnsembleError(UserError):
    """The members cannot make one ensemble; the message says which and why."""


@dataclass
class Member:
    """One trained model of the ensemble, read from its package."""
    source: str         # what --members named
    folder: str         # its local package folder
    class_names: list
    backbone: str
    input_size: int
    resize_mode: str
    weight: float
    saved: object       # the loaded SavedModel


def package_folder(local, source):
    """The package inside `local` (a model/ folder, or a train_url's copy holding model/)."""
    folder = packages.package_in(local)
    if folder:
        return folder
    raise EnsembleError(f"--members: {source} holds no model package (saved_model.pb): give "
                        "a model/ folder or the train_url of a finished run")


def load_members(sources, weights, local_copy):
    """The members `sources` name (1..MAX_MEMBERS URLs; `local_copy(url)` gives a local path,
    fetching obs:// and s3:// first) with their `weights` (None: equal)."""
    if not 1 <= len(sources) <= MAX_MEMBERS:
        raise EnsembleError(f"--members names {len(sources)} models; an ensemble takes 1 to "
                            f"{MAX_MEMBERS}, comma-separated")
    weights = list(weights) if weights else [1.0] * len(sources)
    if len(weights) != len(sources):
        raise EnsembleError(f"--member_weights gives {len(weights)} weights for "
                            f"{len(sources)} members: give one per member, or none")
    if any(not w > 0 for w in weights):
        raise EnsembleError(f"--member_weights must all be above 0 (got {weights})")
    members = []
    for source, weight in zip(sources, weights):
        folder = package_folder(local_copy(source), source)
        saved = tf.saved_model.load(folder)
        missing = {"pixels", "info"} - set(saved.signatures)
        if missing:
            raise EnsembleError(f"--members: the package {source} has no "
                                f"{'/'.join(sorted(missing))} signature (exported by an older "
                                "version): export it again with this one")
        info = {key: value.numpy() for key, value in saved.signatures["info"]().items()}
        members.append(Member(source, folder,
                              label_map.load(os.path.join(folder, label_map.FILE_NAME)),
                              info["backbone"].decode(), int(info["input_size"]),
                              info["resize_mode"].decode(), float(weight), saved))
    check_labels(members)
    return members


def check_labels(members):
    """Every member names the first member's classes (in any order)."""
    first = members[0]
    for member in members[1:]:
        if set(member.class_names) != set(first.class_names):
            only_first = sorted(set(first.class_names) - set(member.class_names))[:5]
            only_this = sorted(set(member.class_names) - set(first.class_names))[:5]
            raise EnsembleError(
                f"--members: {member.source} and {first.source} name different classes "
                f"(only in the first: {only_first or 'none'}; only in {member.source}: "
                f"{only_this or 'none'}): members must be trained on the same classes")


class EnsembleModule(tf.Module):
    """The members, tracked (their variables are saved with the ensemble), and the serving
    function over them."""

    def __init__(self, members, tta):
        super().__init__()
        self.members_ = [member.saved for member in members]
        names = members[0].class_names
        total = sum(member.weight for member in members)
        # (pixels signature, size, resize mode, weight, column order or None) per member
        self._plan = [(member.saved.signatures["pixels"], member.input_size,
                       member.resize_mode, member.weight / total,
                       None if member.class_names == names else
                       [member.class_names.index(name) for name in names])
                      for member in members]
        self.tta = tta

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve(self, images):
        """encoded bytes [batch] -> the members' weighted mean probabilities [batch, classes]"""
        batch = tf.shape(images)[0]
        decoded, total = {}, None
        for pixels_fn, size, resize_mode, weight, order in self._plan:
            if (size, resize_mode) not in decoded:
                decoded[size, resize_mode] = tf.map_fn(
                    lambda data, s=size, m=resize_mode: bytes_to_input(data, s, m), images,
                    fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
            views = views_of.views(decoded[size, resize_mode], size, self.tta)
            probabilities = pixels_fn(pixels=tf.concat(views, axis=0))["probabilities"]
            probabilities = views_of.mean_over_views(probabilities, batch, len(views))
            if order is not None:
                probabilities = tf.gather(probabilities, order, axis=1)
            total = weight * probabilities if total is None else total + weight * probabilities
        return {"probabilities": total}


def save(members, directory, tta):
    """Write the ensemble's SavedModel and ensemble.json into `directory` (made anew by the
    caller); returns the class names (the first member's order)."""
    module = EnsembleModule(members, tta)
    tf.saved_model.save(module, directory,
                        signatures={"serving_default": module.serve.get_concrete_function()})
    drop_ops(directory, NEWER_THAN_THE_RUNTIME)
    description = {"tta": tta, "views": views_of.count(tta), "members": [
        {"source": m.source, "backbone": m.backbone, "input_size": m.input_size,
         "resize_mode": m.resize_mode, "weight": m.weight} for m in members]}
    with open(os.path.join(directory, FILE_NAME), "w", encoding="utf-8") as f:
        json.dump(description, f, indent=2)
    log.info("ensemble of %d: %s; %d test-time view%s each (--tta=%s)", len(members),
             ", ".join(f"{m.backbone}@{m.input_size} x{m.weight:g}" for m in members),
             views_of.count(tta), "" if tta == "none" else "s", tta)
    return members[0].class_names

