"""Read a Keras weights file of any era into plain arrays, grouped by layer name.

What users bring: Keras 2 `.h5` weight files (Keras <= 2.3, keras-applications, tf.keras,
tf_keras: `layer_names` / `weight_names` attributes), Keras 2 whole models (the same under
`model_weights`, beside a `model_config`), Keras 3 `.weights.h5` files (`layers/<key>/vars/<i>`,
the layer's name in the `vars` group's `name` attribute) and Keras 3 `.keras` archives (a zip
holding `model.weights.h5`). A model nested in another (a backbone inside a classifier) is a
scope of its own, so its layers keep their own names. Nothing here knows about backbones.
"""
import io
import json
import os
import zipfile
from dataclasses import dataclass, field

import h5py
import numpy as np

from errors import UserError


class WeightFileError(UserError):
    """The file is not a Keras weights file, or cannot be read whole."""


@dataclass
class LayerWeights:
    name: str                      # the layer's name in the file
    arrays: list                   # numpy arrays, in the file's order
    names: list = field(default_factory=list)  # weight names ('kernel'), where the file has them

    @property
    def shapes(self):
        return [tuple(a.shape) for a in self.arrays]


@dataclass
class WeightFile:
    path: str
    format: str                    # e.g. "Keras 2 .h5 weights, keras 2.2.4"
    scopes: dict                   # scope name ("" = top level) -> {layer name: LayerWeights}
    whole_model: bool = False      # the file also holds a model config
    layer_names_known: bool = True  # False for Keras 3 files written before names were stored


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _sniff(path):
    """What kind of file this is, from its first bytes: 'hdf5', 'zip', or a WeightFileError."""
    size = os.path.getsize(path)
    if size == 0:
        raise WeightFileError(f"{path} is empty (0 bytes): copy the weights file again")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"PK"):
        return "zip"
    if head[:1] == b"\x80":
        what = "a Python pickle (a PyTorch .pth/.pt file?)"
    elif head.startswith(b"\n") or path.endswith((".index", ".pb")) or ".data-" in path:
        what = "a TensorFlow checkpoint or SavedModel part"
    else:
        what = "not an HDF5 file"
    raise WeightFileError(f"{path} is not a Keras weights file: {what}. Keras weights are "
                          ".h5 / .weights.h5 (HDF5) or .keras files")


def read(path):
    """The WeightFile at `path`; WeightFileError saying what the file is when it is no Keras
    weights file, or that it is cut short."""
    kind = _sniff(path)
    if kind == "zip":
        return _read_keras_archive(path)
    try:
        with h5py.File(path, "r") as f:
            return _read_h5(f, path)
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "eof" in text.lower():
            raise WeightFileError(
                f"{path} is cut short ({os.path.getsize(path):,} bytes; an interrupted "
                "download or upload?): copy the weights file again") from None
        raise WeightFileError(f"{path}: HDF5 cannot read it ({text.splitlines()[0][:200]}): "
                              "copy the weights file again") from None


def _read_keras_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "model.weights.h5" not in names:
                what = ("a PyTorch checkpoint" if any(n.endswith("data.pkl") for n in names)
                        else "a zip archive without model.weights.h5")
                raise WeightFileError(f"{path} is not a Keras weights file: {what}")
            config = json.loads(archive.read("config.json")) if "config.json" in names else {}
            weights = io.BytesIO(archive.read("model.weights.h5"))
    except zipfile.BadZipFile:
        raise WeightFileError(f"{path} is a damaged zip archive (cut short?): copy the .keras "
                              "file again") from None
    version = config.get("keras_version") or _keras_archive_version(path)
    with h5py.File(weights, "r") as f:
        scopes, known = _keras3_scopes(f)
    return WeightFile(path, f"Keras 3 .keras archive{_version(version)}", scopes,
                      whole_model=True, layer_names_known=known)


def _keras_archive_version(path):
    with zipfile.ZipFile(path) as archive:
        if "metadata.json" in archive.namelist():
            return json.loads(archive.read("metadata.json")).get("keras_version")
    return None


def _version(version):
    return f", keras {version}" if version else ""


def _read_h5(f, path):
    if "layer_names" in f.attrs:
        return WeightFile(path, f"Keras 2 .h5 weights{_version(_keras2_version(f))}",
                          _keras2_scopes(f))
    if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
        version = _keras2_version(f) or _keras2_version(f["model_weights"])
        return WeightFile(path, f"Keras 2 whole model .h5{_version(version)}",
                          _keras2_scopes(f["model_weights"]), whole_model=True)
    if "layers" in f and isinstance(f["layers"], h5py.Group):
        scopes, known = _keras3_scopes(f)
        return WeightFile(path, "Keras 3 .weights.h5", scopes, layer_names_known=known)
    top = ", ".join(list(f.keys())[:5]) or "nothing"
    raise WeightFileError(f"{path} is an HDF5 file but not a Keras weights file (no "
                          f"layer_names, model_weights or layers; it holds {top})")


def _keras2_version(group):
    version = group.attrs.get("keras_version")
    return _text(version) if version is not None else None


def _keras2_scopes(group):
    """Keras 2 layout: one group per layer; a nested model is one group whose weight names
    carry its inner layers' names ('conv1_conv/kernel:0' under 'resnet50')."""
    scopes = {"": {}}
    for layer_name in (_text(n) for n in group.attrs["layer_names"]):
        layer = group[layer_name]
        weight_names = [_text(n) for n in layer.attrs.get("weight_names", [])]
        for weight_name in weight_names:
            prefix, _, base = weight_name.rpartition("/")
            base = base.split(":")[0]
            if prefix.startswith(layer_name + "/"):  # 'model/inner/kernel:0' spellings
                prefix = prefix[len(layer_name) + 1:]
            if prefix in ("", layer_name):
                scope, inner = "", layer_name
            else:
                scope, inner = layer_name, prefix
            entry = scopes.setdefault(scope, {}).setdefault(inner, LayerWeights(inner, []))
            entry.arrays.append(np.asarray(layer[weight_name]))
            entry.names.append(base)
    return scopes


def _keras3_scopes(f):
    """Keras 3 layout: layers/<key>/vars/<i>, a nested model as layers/<key>/layers/...; the
    layer's own name is the vars group's `name` attribute (Keras >= 3.? writes it)."""
    scopes, known = {}, True

    def walk(group, scope):
        nonlocal known
        layers = scopes.setdefault(scope, {})
        for key in group["layers"]:
            node = group["layers"][key]
            variables = node.get("vars")
            name = _text(variables.attrs["name"]) if (
                variables is not None and "name" in variables.attrs) else None
            if name is None:
                known = False
                name = key
            if "layers" in node:
                walk(node, name if not scope else f"{scope}/{name}")
                continue
            if variables is None or not len(variables):
                continue
            arrays = [np.asarray(variables[i]) for i in sorted(variables, key=int)]
            layers[name] = LayerWeights(name, arrays)

    walk(f, "")
    return scopes, known
