"""Pretrained weights as users hold them, written by the real writers (keras-applications 1.0.8
on tf_keras, tf_keras itself, Keras 3) with random but non-trivial weights, BatchNorm statistics
included: each layout loads through train.py's own path (weights.prepare, then apply) and the
backbone then computes the writer's own features on the same pixels; files that do not fit say
what they are; train.py checks the file before it touches the data."""
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import obs_utils
from models import backbones, build, weights
from models.layers import BackboneNormalization
from tests.images import digit_image, encode, write
from tests.servers import ROOT

SIZE = 64


def _randomize(model, rng, low_variances=False):
    """Non-trivial values for every weight the initialisers leave plain (BatchNorm's
    statistics and affine terms, biases, EfficientNet's input Normalization), so a wrong name
    map or stale state shows in the features. Kernels keep their random values.
    `low_variances`: BatchNorm variances from 0.1, where an epsilon of 1e-3 instead of 1e-5
    shows clearly (ResNets); deeper swish networks turn such gains into float noise."""
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        new = []
        for value, variable in zip(values, layer.weights):
            name = variable.name.split("/")[-1].split(":")[0]
            if name == "gamma":
                value = rng.uniform(0.5, 1.5, value.shape)
            elif name in ("beta", "bias", "moving_mean"):
                value = rng.normal(0.0, 0.1, value.shape)
            elif name == "moving_variance":
                value = rng.uniform(0.1 if low_variances else 0.5, 2.0, value.shape)
            elif name == "variance":  # EfficientNet's input Normalization
                value = rng.uniform(0.1, 1.5, value.shape)
            elif name == "mean":
                value = rng.uniform(0.3, 0.6, value.shape)
            new.append(np.asarray(value, dtype="float32"))
        layer.set_weights(new)


def _keras_applications_108(name, **kwargs):
    """A keras-applications 1.0.8 model function, run on tf_keras (the library takes its
    Keras as arguments)."""
    import tf_keras

    module, function = name.split(".")
    library = __import__(f"keras_applications.{module}", fromlist=[function])
    return getattr(library, function)(
        weights=None, backend=tf_keras.backend, layers=tf_keras.layers,
        models=tf_keras.models, utils=tf_keras.utils, **kwargs)


def _tf_keras(name, **kwargs):
    import tf_keras

    return getattr(tf_keras.applications, name)(weights=None, **kwargs)


class Written:
    """A weights file as a writer left it, and the writer's own pooled features."""

    def __init__(self, path, backbone, features, size):
        self.path, self.backbone, self.features, self.size = str(path), backbone, features, size


def _pooled(model, layer=None):
    """The writer's pooled feature: its notop output averaged over space, or a named
    layer's output (the with-top model's own `avg_pool`)."""
    if layer is None:
        return lambda x: np.asarray(model(x, training=False)).mean(axis=(1, 2))
    import tf_keras

    inner = tf_keras.Model(model.inputs, model.get_layer(layer).output)
    return lambda x: np.asarray(inner(x, training=False))


def _write_all(folder):
    """Every layout of the issue, each written once by its own writer."""
    import tf_keras

    rng = np.random.default_rng(13)
    shape = {"input_shape": (SIZE, SIZE, 3)}
    files = {}

    def keep(key, model, backbone, filename, features, size=SIZE, whole=False):
        _randomize(model, rng, low_variances=backbone.startswith("resnet"))
        path = folder / filename
        model.save(str(path)) if whole else model.save_weights(str(path))
        files[key] = Written(path, backbone, features, size)

    notop = {"include_top": False, **shape}
    for key, function, backbone, filename in (
            ("ka108-resnet50", "resnet50.ResNet50", "resnet50",
             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
            ("ka108-resnet_common-resnet50", "resnet_common.ResNet50", "resnet50",
             "resnet50_common_notop.h5"),
            ("ka108-resnet101", "resnet_common.ResNet101", "resnet101",
             "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"),
            ("ka108-densenet121", "densenet.DenseNet121", "densenet121",
             "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5")):
        model = _keras_applications_108(function, **notop)
        keep(key, model, backbone, filename, _pooled(model))
    model = _keras_applications_108("resnet50.ResNet50", include_top=True, **shape)
    keep("ka108-resnet50-top", model, "resnet50",
         "resnet50_weights_tf_dim_ordering_tf_kernels.h5", _pooled(model, "avg_pool"))
    model = _keras_applications_108("xception.Xception", include_top=False,
                                    input_shape=(71, 71, 3))
    keep("ka108-xception", model, "xception",
         "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", _pooled(model), size=71)

    model = _tf_keras("MobileNetV3Small", include_top=False, include_preprocessing=True, **shape)
    keep("tf_keras-mobilenetv3small", model, "mobilenetv3small",
         "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", _pooled(model))
    model = _tf_keras("EfficientNetB0", include_top=False, **shape)
    keep("tf_keras-efficientnetb0", model, "efficientnetb0", "efficientnetb0_notop.h5",
         _pooled(model))
    inner = _tf_keras("ResNet50", include_top=False, **shape)
    images = tf_keras.Input((SIZE, SIZE, 3))
    head = tf_keras.layers.Dense(7, activation="softmax", name="my_head")(
        tf_keras.layers.GlobalAveragePooling2D()(inner(images)))
    whole = tf_keras.Model(images, head)
    whole.compile("adam", "categorical_crossentropy")
    keep("tf_keras-whole-model", whole, "resnet50", "my_resnet50_model.h5", _pooled(inner),
         whole=True)

    model = backbones.build("resnet50", SIZE)
    keep("keras3-weights", model, "resnet50", "resnet50.weights.h5", _pooled(model))
    classifier, inner = build.build_classifier("resnet50", 4, SIZE)
    _randomize(inner, rng)
    classifier.save(str(folder / "classifier.keras"))
    classifier.save_weights(str(folder / "classifier.weights.h5"))
    files["keras3-classifier.keras"] = Written(folder / "classifier.keras", "resnet50",
                                               _pooled(inner), SIZE)
    files["keras3-classifier.weights.h5"] = Written(folder / "classifier.weights.h5",
                                                    "resnet50", _pooled(inner), SIZE)
    return files


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return _write_all(tmp_path_factory.mktemp("weights"))


def _normalised(images, backbone_name):
    return keras.ops.convert_to_numpy(
        BackboneNormalization(backbones.get(backbone_name).normalization)(images))


def _unit(features):
    return features / np.linalg.norm(features, axis=1, keepdims=True)


LAYOUTS = ["ka108-resnet50", "ka108-resnet50-top", "ka108-resnet_common-resnet50",
           "ka108-resnet101", "ka108-densenet121", "ka108-xception",
           "tf_keras-mobilenetv3small", "tf_keras-efficientnetb0", "tf_keras-whole-model",
           "keras3-weights", "keras3-classifier.keras", "keras3-classifier.weights.h5"]


@pytest.mark.parametrize("key", LAYOUTS)
def test_each_layout_loads_and_computes_the_writers_features(written, key, tmp_path, caplog):
    case = written[key]
    caplog.set_level("INFO", logger="models")
    # Keras numbers unnamed layers per process: make ours differ from the writer's.
    for _ in range(3):
        keras.layers.Conv2D(1, 1), keras.layers.BatchNormalization(), keras.layers.Normalization()
    found = weights.prepare(case.backbone, case.path, str(tmp_path), case.size)
    backbone = backbones.build(case.backbone, case.size)
    weights.apply(backbone, found)

    total = sum(1 for layer in backbone.layers if layer.weights)
    summary = f"loaded {total}/{total} weight layers of {case.backbone} from {case.path}"
    assert summary in caplog.text
    images = np.random.default_rng(1).uniform(0, 255, (3, case.size, case.size, 3))
    pixels = _normalised(images.astype("float32"), case.backbone)
    ours = keras.ops.convert_to_numpy(backbone(pixels, training=False)).mean(axis=(1, 2))
    np.testing.assert_allclose(_unit(ours), _unit(case.features(pixels)), atol=1e-4)
    if key == "ka108-resnet50":
        assert "old keras-applications 1.0.8 resnet50.py names" in caplog.text
    if key == "ka108-resnet50-top":
        assert "top skipped: fc1000 (1000 classes)" in caplog.text
    if key in ("tf_keras-whole-model", "keras3-classifier.keras"):
        assert "the model's head skipped" in caplog.text


def test_files_that_do_not_fit_say_what_they_hold(written, tmp_path):
    cases = [
        ("resnet50", written["ka108-densenet121"].path,
         ["it is a DenseNet121 notop file (Keras 2 .h5 weights", "--backbone=densenet121",
          "names tried: today's names; the old keras-applications 1.0.8 resnet50.py names"]),
        ("resnet50", written["ka108-resnet101"].path,
         ["holds more than a resnet50", "conv4_block7_1_conv", "a ResNet101 notop file",
          "--backbone=resnet101"]),
        ("densenet121", written["ka108-resnet50-top"].path,
         ["ResNet50 (old keras-applications 1.0.8 resnet50.py names) file with a 1000-class "
          "top (fc1000)", "--backbone=resnet50"]),
        ("resnet50", written["tf_keras-efficientnetb0"].path,
         ["an EfficientNetB0 notop file", "--backbone=efficientnetb0"]),
    ]
    # A file of the right architecture with one layer missing: a partial load is refused,
    # naming the layer, never done silently.
    partial = tmp_path / "partial.h5"
    with h5py.File(written["ka108-resnet50"].path) as source, h5py.File(partial, "w") as f:
        for key, value in source.attrs.items():
            f.attrs[key] = value
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in source.attrs["layer_names"]]
        names.remove("res3b_branch2b")
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            source.copy(source[name], f, name=name)
    cases.append(("resnet50", partial, ["105/106 weight layers match",
                                        "first that do not: conv3_block2_2_conv (absent)"]))
    data = open(written["ka108-resnet50"].path, "rb").read()
    write(str(tmp_path / "cut.h5"), data[:len(data) // 3])
    cases.append(("resnet50", tmp_path / "cut.h5", ["is cut short", "copy the weights file again"]))
    write(str(tmp_path / "notes.h5"), b"these are not weights\n")
    cases.append(("resnet50", tmp_path / "notes.h5", ["is not a Keras weights file"]))
    write(str(tmp_path / "model.pth"), b"\x80\x02}q\x00.")
    cases.append(("resnet50", tmp_path / "model.pth", ["a Python pickle (a PyTorch"]))
    with h5py.File(tmp_path / "table.h5", "w") as f:
        f["measurements"] = np.arange(4)
    cases.append(("resnet50", tmp_path / "table.h5",
                  ["an HDF5 file but not a Keras weights file", "measurements"]))
    for backbone, path, expected in cases:
        with pytest.raises(weights.WeightsError) as error:
            weights.prepare(backbone, str(path), str(tmp_path), SIZE)
        for text in expected:
            assert text in str(error.value), (path, str(error.value))


def _images(folder, count=12):
    """Three classes of digits at 64 px as PNG, in class folders."""
    for i in range(count):
        image, _ = digit_image(i, SIZE)
        write(str(folder / f"class_{i % 3}" / f"digit_{i}.png"), encode(image, "PNG"))
    return folder


def test_a_wrong_file_stops_train_py_before_the_data_and_writes_nothing(
        written, tmp_path, bucket):
    """The weights are fetched from OBS and matched first: a DenseNet file for resnet50 is one
    error line, exit 2, with nothing screened and nothing in train_url."""
    obs_utils.copy_tree(str(_images(tmp_path / "data")), f"obs://{bucket}/data/")
    obs_utils.copy(written["ka108-densenet121"].path, f"obs://{bucket}/w/densenet121.h5")
    proc = subprocess.run(
        [sys.executable, "train.py", f"--data_url=obs://{bucket}/data/",
         f"--train_url=obs://{bucket}/out/", f"--local_data_root={tmp_path / 'cache'}",
         f"--pretrained_weights=obs://{bucket}/w/densenet121.h5", f"--input_size={SIZE}"],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log
    errors = [line for line in proc.stdout.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "it is a DenseNet121 notop file" in errors[0], log
    assert "Traceback" not in log and "screen" not in proc.stdout.lower(), log
    assert not obs_utils.is_dir(f"obs://{bucket}/out/")  # nothing under train_url
    assert not os.path.exists(tmp_path / "cache" / "data")


@pytest.mark.parametrize("key", ["ka108-resnet50-top"])
def test_train_py_with_the_file_exports_the_writers_features(written, key, tmp_path):
    """The issue's end: train.py --pretrained_weights=FILE, one head-only epoch with the
    backbone frozen, and the exported package's `embed` signature gives the writer's
    pooled features (L2-normalised) on the same pixels. The ImageNet file with its top (the
    one most users hold); every other file takes the same path after loading, which
    test_each_layout_loads_and_computes_the_writers_features covers for each layout (the
    whole train.py run costs 35-50 s a file, so it is run for this one)."""
    from inputs.preprocess import bytes_to_input

    case = written[key]
    data = _images(tmp_path / "data")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "train.py", f"--data_url={data}", f"--train_url={out}",
         f"--local_data_root={tmp_path / 'cache'}", f"--pretrained_weights={case.path}",
         f"--backbone={case.backbone}", f"--input_size={SIZE}", "--batch_size=4",
         "--max_epochs=1", "--freeze_epochs=1", "--augment=none"],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    total = {"resnet50": 106, "densenet121": 241}[case.backbone]
    assert f"loaded {total}/{total} weight layers of {case.backbone} from {case.path}" in \
        proc.stdout
    assert "phase: head only" in proc.stdout and "NO PRETRAINED WEIGHTS" not in proc.stdout

    files = sorted((data / "class_1").iterdir())[:2]
    encoded = [f.read_bytes() for f in files]
    pixels = np.stack([bytes_to_input(tf.constant(b), SIZE, "letterbox").numpy()
                       for b in encoded])
    expected = _unit(case.features(_normalised(pixels, case.backbone)))
    loaded = tf.saved_model.load(str(out / "model"))
    got = loaded.signatures["embed"](images=tf.constant(encoded))["embeddings"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_an_efficientnet_imagenet_file_gives_keras_own_imagenet_model(tmp_path, monkeypatch):
    """keras.applications' EfficientNet ImageNet files hold the ImageNet stds as their
    Normalization's variance, and Keras builds the model for them with one more Rescaling
    layer. A file holding those values (written by tf_keras, as the real one was) must give
    the features of Keras' own EfficientNetB0(weights="imagenet") reading it: the download is
    the one thing replaced, by the local file."""
    from keras.src.applications import efficientnet

    # Kernels as initialised, BatchNorm plain: random BatchNorm statistics make a 16-block
    # network chaotic enough that the one extra multiplication of Keras' Rescaling (against
    # the squared variance here) rounds apart by 1e-3.
    writer = _tf_keras("EfficientNetB0", include_top=False, input_shape=(SIZE, SIZE, 3))
    normalization = next(layer for layer in writer.layers
                         if type(layer).__name__ == "Normalization")
    normalization.set_weights([np.array([0.485, 0.456, 0.406], "float32"),
                               np.array([0.229, 0.224, 0.225], "float32"),
                               np.array(0, "int64")])
    path = str(tmp_path / "efficientnetb0_notop.h5")
    writer.save_weights(path)
    monkeypatch.setattr(efficientnet.file_utils, "get_file", lambda *args, **kwargs: path)
    reference = keras.applications.EfficientNetB0(include_top=False, weights="imagenet",
                                                  input_shape=(SIZE, SIZE, 3))

    found = weights.prepare("efficientnetb0", path, str(tmp_path), SIZE)
    assert "the ImageNet stds of its Normalization squared" in found.layout
    backbone = backbones.build("efficientnetb0", SIZE)
    weights.apply(backbone, found)
    images = np.random.default_rng(2).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(backbone(images, training=False)).mean(axis=(1, 2))
    theirs = keras.ops.convert_to_numpy(reference(images, training=False)).mean(axis=(1, 2))
    np.testing.assert_allclose(_unit(ours), _unit(theirs), atol=1e-4)
