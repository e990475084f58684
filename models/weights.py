"""Offline pretrained weights: find the file, match it to the backbone layer by layer, load it,
or say loudly that training starts from random weights. Nothing here can reach for a hub.

Looked up in order: --pretrained_weights (local path, obs:// or s3://, copied to the cache),
then pretrained/<the standard Keras file name>, then none (a loud warning in the log). Any
Keras weights file of any era loads (models/weight_files.py reads it): layers are matched by
name, in today's spelling or an earlier era's (models/weight_layouts.py); a classifier top or
a whole model's head is skipped and said so; a partial match is an error naming the first
layers that did not match. `prepare` does all of it before any data is touched.
"""
import logging
import os
import re
from dataclasses import dataclass, field

import keras
import numpy as np

import obs_utils
from errors import UserError

from . import backbones, weight_files, weight_layouts

log = logging.getLogger("models")

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "pretrained")


class WeightsError(UserError):
    """A weights file is missing or does not fit the backbone."""


@dataclass
class Match:
    """A weights file matched to a backbone: one array per backbone weight, in its order."""
    path: str
    backbone_name: str
    layout: str
    arrays: list
    layers: int                                  # weight layers loaded (all of the backbone's)
    skipped: list = field(default_factory=list)  # "fc1000 (1000 classes)", a head's layers
    skipped_what: str = "top"                    # or "the model's head" (a nested backbone)
    head: dict = field(default_factory=dict)     # --init_from: the layers after the backbone

    def summary(self):
        text = (f"loaded {self.layers}/{self.layers} weight layers of {self.backbone_name} "
                f"from {self.path} (layout: {self.layout}")
        if self.skipped:
            more = f" and {len(self.skipped) - 4} more" if len(self.skipped) > 4 else ""
            text += f"; {self.skipped_what} skipped: {', '.join(self.skipped[:4])}{more}"
        return text + ")"


def resolve(backbone_name, flag, cache_root, pretrained_dir=PRETRAINED_DIR):
    """Local path of the weights file to load, or None (random initialisation)."""
    if flag:
        if obs_utils.is_remote(flag):
            where = obs_utils.parse(flag)  # bucket and key in the path: no two files collide
            local = os.path.join(cache_root, "weights", where.bucket,
                                 *where.path.strip("/").split("/"))
            if obs_utils.cached_copy(flag, local):
                log.info("copied pretrained weights %s -> %s", flag, local)
            else:
                log.info("pretrained weights %s: the cached copy %s is current (same size "
                         "and ETag)", flag, local)
            return local
        path = obs_utils.parse(flag).path
        if not os.path.isfile(path):
            raise WeightsError(f"--pretrained_weights={flag}: no such file")
        return path
    standard = os.path.join(pretrained_dir, backbones.get(backbone_name).weights_file)
    if os.path.isfile(standard):
        log.info("pretrained weights: %s", standard)
        return standard
    return None


def prepare(backbone_name, flag, cache_root, input_size, pretrained_dir=PRETRAINED_DIR):
    """The up-front check: resolve and fetch the file, read it and match it against a backbone
    built for the purpose. Returns the Match (apply() it to the training backbone), or None
    for random weights; WeightsError before any data is screened when it does not fit."""
    path = resolve(backbone_name, flag, cache_root, pretrained_dir)
    if path is None:
        return None
    found = match(backbones.build(backbone_name, input_size), backbone_name, path)
    log.info("%s", found.summary())
    return found


def apply(backbone, found):
    """Assign a Match's arrays to the backbone's weights (under a distribution strategy too)."""
    if len(found.arrays) != len(backbone.weights):
        raise WeightsError(f"{found.path} was matched to another build of "
                           f"{found.backbone_name} ({len(found.arrays)} weights, this one has "
                           f"{len(backbone.weights)})")
    for variable, array in zip(backbone.weights, found.arrays):
        variable.assign(array.astype(variable.dtype))
    for layer in backbone.layers:
        # Normalization keeps tensors made from its variables at build time; Keras' own
        # loaders refresh them so, and so must an assignment.
        if layer.weights and hasattr(layer, "finalize_state"):
            layer.finalize_state()


def load(backbone, path, backbone_name):
    """Match `path` to `backbone` and load it; returns the Match (its summary is logged)."""
    found = match(backbone, backbone_name, path)
    apply(backbone, found)
    log.info("%s", found.summary())
    return found


def match(backbone, backbone_name, path):
    """Match the file's layers to the backbone's weight layers (by name, in each era's
    spelling, in each model the file holds); WeightsError saying what the file holds and
    what to pass instead when anything of the backbone is left unmatched."""
    try:
        wfile = weight_files.read(path)
    except weight_files.WeightFileError as exc:
        raise WeightsError(f"--pretrained_weights: {exc}") from None
    if not wfile.layer_names_known:
        return _keras_in_order(backbone, backbone_name, wfile)
    targets = [layer for layer in backbone.layers if layer.weights]
    best = None
    for scope, layers in wfile.scopes.items():
        for spelling in weight_layouts.spellings(backbone_name):
            pairs = _pair(targets, layers, spelling)
            score = sum(source is not None and _fits(layer, source) for layer, source in pairs)
            if best is None or score > best[0]:
                best = (score, scope, spelling, pairs)
    score, scope, spelling, pairs = best
    if score < len(targets):
        raise WeightsError(_mismatch(wfile, backbone_name, pairs, score, len(targets), spelling))
    used = {id(source) for _, source in pairs}
    extra = [source for source in wfile.scopes[scope].values() if id(source) not in used]
    deep = [source.name for source in extra if any(len(s) > 2 for s in source.shapes)]
    if deep:
        raise WeightsError(
            f"{path} holds more than a {backbone_name}: layers it lacks ({', '.join(deep[:3])}"
            f"{', ...' if len(deep) > 3 else ''}); it is {_what(wfile)}. "
            + _advice(backbone_name, weight_layouts.identify(_all_layers(wfile))[1]))
    skipped = [_describe_extra(source) for source in extra]
    for other, layers in wfile.scopes.items():
        if other != scope:
            skipped += [_describe_extra(source) for source in layers.values()]
    arrays, folded = _arrays(backbone, pairs, spelling)
    layout = wfile.format + ("" if spelling is weight_layouts.TODAY else f", {spelling.label}")
    layout += "".join(f", {text}" for text in folded)
    if scope:
        layout += f", the backbone nested as '{scope}'"
    return Match(path, backbone_name, layout, arrays, len(targets), skipped,
                 "the model's head" if scope else "top")


def _pair(targets, layers, spelling):
    """[(backbone layer, the file's LayerWeights or None)], by exact name, then by the Keras 2
    spelling folded ('Conv/BatchNorm' ~ 'conv_bn') where that is unambiguous."""
    folded = {}
    for name, source in layers.items():
        folded.setdefault(weight_layouts.keras2_key(name), []).append(source)
    pairs = []
    for layer in targets:
        wanted = spelling.file_name(layer.name)
        source = layers.get(wanted)
        if source is None:
            candidates = folded.get(weight_layouts.keras2_key(wanted), [])
            source = candidates[0] if len(candidates) == 1 else None
        pairs.append((layer, source))
    return _pair_unnamed(pairs, layers)


def _pair_unnamed(pairs, layers):
    """Pair the layers keras.applications leaves unnamed (Xception's shortcut convolutions,
    EfficientNet's Normalization) by their order: Keras numbers such layers per process
    ('conv2d_4', 'batch_normalization_12'), so the writer's numbers are not ours, but within
    one model they count up in the order the layers were made."""
    taken = {id(source) for _, source in pairs if source is not None}
    result = list(pairs)
    kinds = {_auto_kind(layer.name, layer) for layer, source in pairs if source is None}
    for kind in kinds - {None}:
        ours = sorted((i for i, (layer, source) in enumerate(pairs)
                       if source is None and _auto_kind(layer.name, layer) == kind),
                      key=lambda i: _auto_number(pairs[i][0].name))
        theirs = sorted((s for name, s in layers.items()
                         if id(s) not in taken and _auto_kind(name, None, kind) == kind),
                        key=lambda s: _auto_number(s.name))
        if len(ours) == len(theirs):
            for i, source in zip(ours, theirs):
                result[i] = (pairs[i][0], source)
    return result


def _auto_kind(name, layer, kind=None):
    """The class part of a name Keras made up ('conv2d' of 'conv2d_4'), or None when `name`
    is no such name (for `layer`'s class, or for the given `kind`)."""
    if kind is None:
        kind = re.sub(r"(?<!^)(?=[A-Z])", "_", type(layer).__name__).lower().replace("2_d", "2d")
    return kind if re.fullmatch(rf"{kind}(_\d+)?", name) else None


def _auto_number(name):
    found = re.search(r"_(\d+)$", name)
    return int(found.group(1)) if found else 0


def _ordered(layer, source):
    """The file's arrays in the order of the layer's weights: by weight name where the file
    has the same names (Keras 2 files name them), else in the file's order."""
    ours = [w.name for w in layer.weights]
    if source.names and sorted(source.names) == sorted(ours):
        return [source.arrays[source.names.index(name)] for name in ours]
    return source.arrays


def _fits(layer, source):
    arrays = _ordered(layer, source)
    return len(arrays) == len(layer.weights) and all(
        tuple(a.shape) == tuple(w.shape) for a, w in zip(arrays, layer.weights))


def _arrays(backbone, pairs, spelling):
    """(one array per backbone weight, in backbone.weights order; what was folded in, for the
    log). Where the era's BatchNorm epsilon differs from today's, it is folded into the moving
    variance, so that (x - mean) / sqrt(var + eps) is the writer's exactly; an EfficientNet
    ImageNet file's Normalization gets its missing Rescaling folded in likewise."""
    by_variable, folded = {}, []
    for layer, source in pairs:
        arrays = [np.array(a) for a in _ordered(layer, source)]
        names = [w.name for w in layer.weights]
        if spelling.bn_epsilon is not None and isinstance(
                layer, keras.layers.BatchNormalization):
            index = names.index("moving_variance")
            arrays[index] = arrays[index] + (spelling.bn_epsilon - layer.epsilon)
        if isinstance(layer, keras.layers.Normalization) and "variance" in names:
            squared = weight_layouts.fold_imagenet_stddev(arrays[names.index("variance")])
            if squared is not None:
                arrays[names.index("variance")] = squared
                folded.append("the ImageNet stds of its Normalization squared (the Rescaling "
                              "Keras adds for ImageNet EfficientNets)")
        for variable, array in zip(layer.weights, arrays):
            by_variable[id(variable)] = array
    return [by_variable[id(variable)] for variable in backbone.weights], folded


def _keras_in_order(backbone, backbone_name, wfile):
    """A Keras 3 file written before layer names were stored: Keras' own loader, in order."""
    try:
        backbone.load_weights(wfile.path)
    except (ValueError, KeyError) as exc:
        detail = str(exc).strip().splitlines()[0][:300].rstrip(".")
        raise WeightsError(f"{wfile.path} ({wfile.format}, without layer names) does not fit "
                           f"the {backbone_name} backbone: {detail}") from None
    layers = sum(1 for layer in backbone.layers if layer.weights)
    return Match(wfile.path, backbone_name, f"{wfile.format}, loaded in order by Keras",
                 [np.array(v.numpy()) for v in backbone.weights], layers)


def _describe_extra(source):
    shapes = source.shapes
    if len(shapes) in (1, 2) and len(shapes[0]) == 2:
        return f"{source.name} ({shapes[0][1]} classes)"
    return source.name


def _all_layers(wfile):
    """{layer name: shapes} over every model in the file (for identify)."""
    return {name: source.shapes for layers in wfile.scopes.values()
            for name, source in layers.items()}


def _what(wfile):
    """'a DenseNet121 notop file (Keras 2 .h5 weights)', 'a ResNet50 file with a 1000-class top
    (fc1000) (...)': what the file holds, for the errors."""
    name, _ = weight_layouts.identify(_all_layers(wfile))
    kind = "notop file"
    for layers in wfile.scopes.values():
        dense = [s for s in layers.values() if s.shapes and len(s.shapes[0]) == 2]
        if dense:
            kind = f"file with a {dense[-1].shapes[0][1]}-class top ({dense[-1].name})"
    if name:
        article = "an" if name[0] in "AEIOUX" else "a"
        return f"{article} {name} {kind} ({wfile.format})"
    return f"a {kind} of no backbone this bundle knows ({wfile.format})"


def _advice(backbone_name, flag):
    if flag and flag != backbone_name:
        return (f"Pass --backbone={flag}, or weights made for {backbone_name} "
                "(pretrained/README.md)")
    return (f"Pass weights made for {backbone_name}: pretrained/README.md lists the accepted "
            f"files ({backbones.get(backbone_name).weights_file} and its other forms)")


def _mismatch(wfile, backbone_name, pairs, score, total, spelling):
    """The error for a partial match: how many fit, the first that did not, what the file
    holds and what to pass instead."""
    first = []
    for layer, source in pairs:
        if source is None:
            first.append(f"{layer.name} (absent)")
        elif not _fits(layer, source):
            ours = [tuple(w.shape) for w in layer.weights]
            first.append(f"{layer.name} ({ours} here, {source.shapes} in the file)")
        if len(first) == 3:
            break
    _, flag = weight_layouts.identify(_all_layers(wfile))
    tried = "; ".join(s.label for s in weight_layouts.spellings(backbone_name))
    text = (f"{wfile.path} does not fit the {backbone_name} backbone: it is {_what(wfile)}. "
            f"{score}/{total} weight layers match (names tried: {tried})")
    if flag is None or flag == backbone_name:  # the right family: say where it differs
        text += f"; first that do not: {'; '.join(first)}"
    return text + ". " + _advice(backbone_name, flag)


RANDOM_WARNING = ("NO PRETRAINED WEIGHTS: %s starts from random weights (no "
                  "--pretrained_weights, and pretrained/%s is absent). Expect far lower "
                  "accuracy on small data sets; see pretrained/README.md")


def warn_random(backbone_name):
    message = RANDOM_WARNING % (backbone_name, backbones.get(backbone_name).weights_file)
    log.warning(message)
    return message
