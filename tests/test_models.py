"""Backbones, the in-model normalisation, offline weights (Keras-2 .h5 and Keras 3 files,
local and over obs://), the head and the loss."""
import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import obs_utils
from models import backbones, build, losses, weights
from models.layers import BackboneNormalization


@pytest.mark.parametrize("mode, reference", [
    ("caffe", keras.applications.resnet.preprocess_input),
    ("torch", keras.applications.densenet.preprocess_input),
    ("tf", keras.applications.xception.preprocess_input)])
def test_normalisation_matches_keras_applications(mode, reference):
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(BackboneNormalization(mode)(images))
    np.testing.assert_allclose(got, reference(images.copy()), rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def resnet():
    """One ResNet50 classifier at 32 px, shared by the tests of this module."""
    return build.build_classifier("resnet50", 5, 32)


def test_classifier_shape_softmax_and_freezing(resnet):
    model, backbone = resnet
    probabilities = model(np.zeros((3, 32, 32, 3), "float32"))
    assert probabilities.shape == (3, 5) and probabilities.dtype == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probabilities).sum(1), 1, rtol=1e-5)
    head = 2048 * 5 + 5
    stages = build.backbone_stages(backbone)
    assert build.set_trainable_stages(backbone, stages, 0) == 0
    assert sum(int(w.numpy().size) for w in model.trainable_weights) == head
    trained = build.set_trainable_stages(backbone, stages, None)
    assert trained > 23_000_000  # every layer of ResNet50 trains
    assert all(layer.trainable for layer in backbone.layers)


def write_legacy_h5(model, path):
    """A weights file in the Keras-2 .h5 layout (layer_names / weight_names groups)."""
    from keras.src.legacy.saving import legacy_h5_format
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def test_keras2_file_written_by_tf_keras_loads_and_the_phases_train_what_they_say(tmp_path):
    """The real ResNet50 path at 32 px: a Keras-2 .h5 notop file (written by tf_keras, as users
    have them on OBS) found in pretrained/ under its Keras name loads with equal values; the
    warm-up trains the head only, then every backbone layer's weights change."""
    import tensorflow as tf
    import tf_keras

    from training.loop import Loop, StepConfig

    keras2 = tf_keras.applications.ResNet50(include_top=False, weights=None,
                                            input_shape=(32, 32, 3))
    name = backbones.get("resnet50").weights_file
    keras2.save_weights(str(tmp_path / name))
    with h5py.File(tmp_path / name) as f:
        assert f.attrs["keras_version"].startswith("2.")
    path = weights.resolve("resnet50", "", str(tmp_path / "cache"), pretrained_dir=str(tmp_path))
    model, backbone = build.build_classifier("resnet50", 4, 32)
    weights.load(backbone, path, "resnet50")
    compared = 0
    for layer in keras2.layers:
        if layer.get_weights():
            for a, b in zip(layer.get_weights(), backbone.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
                compared += 1
    assert compared == len(backbone.weights) == 318

    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    loop = Loop(tf.distribute.get_strategy(), model, optimizer,
                losses.make_loss(reduction=None), StepConfig(global_batch=4))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    labels = np.eye(4, dtype="float32")
    batches = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())

    def snapshot(variables):
        return [v.numpy().copy() for v in variables]

    stages = build.backbone_stages(backbone)
    build.set_trainable_stages(backbone, stages, 0)
    before_backbone, before_head = snapshot(backbone.weights), snapshot(model.trainable_weights)
    for _ in range(2):
        loop.train_step(batches)
    for a, b in zip(before_backbone, snapshot(backbone.weights)):
        np.testing.assert_array_equal(a, b)  # frozen: BatchNorm statistics included
    assert all((a != b).any() for a, b in zip(before_head, snapshot(model.trainable_weights)))

    build.set_trainable_stages(backbone, stages, None)
    loop.retrace()
    variables = backbone.trainable_weights
    before = snapshot(variables)
    for _ in range(2):
        loop.train_step(batches)
    unchanged = [v.path for v, a in zip(variables, before) if (v.numpy() == a).all()]
    assert not unchanged, unchanged
    assert all(layer.trainable for layer in backbone.layers)


def test_keras3_weights_file_over_obs(resnet, bucket, tmp_path):
    _, source = resnet
    source.save_weights(str(tmp_path / "mine.weights.h5"))
    obs_utils.copy(str(tmp_path / "mine.weights.h5"), f"obs://{bucket}/w/mine.weights.h5")
    path = weights.resolve("resnet50", f"obs://{bucket}/w/mine.weights.h5",
                           str(tmp_path / "cache"))
    assert path.startswith(str(tmp_path / "cache"))
    fresh = backbones.build("resnet50", 32)
    weights.load(fresh, path, "resnet50")
    np.testing.assert_array_equal(source.weights[0].numpy(), fresh.weights[0].numpy())


def test_a_file_that_does_not_fit_is_a_clear_error(tmp_path):
    small = backbones.build("mobilenetv3small", 32)
    write_legacy_h5(small, str(tmp_path / "mobilenet.h5"))
    resnet50 = backbones.build("resnet50", 32)
    with pytest.raises(weights.WeightsError, match="mobilenet.h5 does not fit the resnet50"):
        weights.load(resnet50, str(tmp_path / "mobilenet.h5"), "resnet50")
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(weights.WeightsError, match="notes.txt is not a Keras weights file"):
        weights.load(resnet50, str(tmp_path / "notes.txt"), "resnet50")
    with pytest.raises(weights.WeightsError, match="no such file"):
        weights.resolve("resnet50", str(tmp_path / "missing.h5"), str(tmp_path))
    assert weights.resolve("resnet50", "", str(tmp_path), pretrained_dir=str(tmp_path)) is None
    assert "NO PRETRAINED WEIGHTS" in weights.warn_random("resnet50")


def test_every_listed_backbone_builds_small():
    for name in ("resnet101", "densenet121", "efficientnetb0", "mobilenetv3large", "xception"):
        size = max(32, backbones.get(name).min_input)
        model, _ = build.build_classifier(name, 3, size)
        assert model.output_shape == (None, 3), name
    with pytest.raises(ValueError, match="--backbone"):
        backbones.get("resnet18")
    with pytest.raises(ValueError, match="too small"):
        backbones.build("xception", 32)


@pytest.mark.parametrize("name", ["resnet50", "efficientnetb0", "mobilenetv3small"])
def test_zero_init_starts_every_residual_block_as_the_identity(name):
    """After zero_init_residuals each Add passes its shortcut through unchanged (the residual
    branch's last BatchNorm outputs 0), and nothing else was touched: the shortcut branch of a
    projection block (ResNet's _0_bn) still computes."""
    backbone = backbones.build(name, 32)
    adds = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Add)]
    kernels = [w.numpy().copy() for w in backbone.weights if "gamma" not in w.path]
    assert build.zero_init_residuals(backbone) == len(adds) > 0
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(
        kernels, [w for w in backbone.weights if "gamma" not in w.path]))
    probe = keras.Model(backbone.inputs, [[a.output, *a.input] for a in adds])
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    for add, (out, *inputs) in zip(adds, probe(images)):
        scale = float(np.abs(np.asarray(out)).max())
        assert scale > 0, add.name
        zero = [float(np.abs(np.asarray(x)).max()) <= 1e-6 * scale for x in inputs]
        assert zero.count(True) == 1, add.name  # the residual branch adds nothing...
        branch = build._source(add.input[zero.index(True)]).name  # (it is this block's)
        assert branch.startswith(add.name.rsplit("_add", 1)[0] + "_"), (add.name, branch)
        assert not branch.endswith("_0_bn"), branch  # ResNet's projection shortcut
        through = inputs[zero.index(False)]
        np.testing.assert_allclose(out, through, rtol=1e-5, atol=1e-6 * scale)  # ...the rest


def test_gem_pooling_is_the_generalised_mean_and_learns_its_exponent():
    """GeM against its formula (p = 1 is the average, a large p nears the max); p gets a
    gradient and moves in a step, but weight decay leaves it alone."""
    from models.layers import GeMPooling
    from training import optim

    x = np.random.default_rng(0).uniform(0, 2, (2, 3, 3, 4)).astype("float32")
    for p in (1.0, 3.0):
        expected = np.mean(x ** p, axis=(1, 2)) ** (1 / p)
        np.testing.assert_allclose(GeMPooling(p)(x).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(GeMPooling(1.0)(x).numpy(), x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(GeMPooling(60.0)(x).numpy(), x.max(axis=(1, 2)), rtol=0.05)
    layer = GeMPooling(3.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    assert float(tape.gradient(loss, layer.p)) != 0.0
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    optimizer = optim.make_optimizer("adamw", 0.1, weight_decay=0.5)
    optimizer.apply([tf.zeros(()), tf.zeros((2, 2))], [layer.p, kernel])
    assert float(layer.p.numpy()) == 3.0           # zero gradient, and no decay on p...
    assert float(kernel.numpy()[0, 0]) < 1.0       # ...while a kernel decays
    with pytest.raises(ValueError, match="at least 1"):
        GeMPooling(0.5)


def test_the_embedding_neck_is_what_the_head_reads_and_retrieval_embeds():
    """pooling=gem with embedding_dim=8 under mixed precision: the neck (Dense, no bias, then
    BatchNorm) gives 8-d features, the head's kernel reads them, GeM runs in float32; without
    a neck the embedding is the pooled backbone feature."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, _ = build.build_classifier("mobilenetv3small", 3, 32, pooling="gem",
                                          embedding_dim=8)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    neck = build.embedding_layer(model)
    assert neck.name == "embedding" and isinstance(neck, keras.layers.BatchNormalization)
    assert neck.output.shape[-1] == 8 and model.get_layer("probabilities").kernel.shape == (8, 3)
    assert [w.name for w in model.get_layer("embedding_projection").weights] == ["kernel"]
    gem = model.get_layer("pool")
    assert gem.p.dtype == "float32" and gem.output.dtype == "float32"
    assert model.output.dtype == "float32"
    plain, _ = build.build_classifier("mobilenetv3small", 3, 32, pooling="max")
    assert build.embedding_layer(plain).name == "pool"
    assert isinstance(plain.get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    with pytest.raises(ValueError, match="--pooling='sum'"):
        build.build_classifier("mobilenetv3small", 3, 32, pooling="sum")
    with pytest.raises(ValueError, match="--embedding_dim=-1"):
        build.build_classifier("mobilenetv3small", 3, 32, embedding_dim=-1)


def test_binary_crossentropy_is_refused_and_smoothing_works():
    with pytest.raises(ValueError, match="binary_crossentropy is refused"):
        losses.make_loss("binary_crossentropy")
    smooth = losses.make_loss(label_smoothing=0.1)
    hard = losses.make_loss()
    y = np.array([[0.0, 1.0, 0.0]], "float32")
    p = np.array([[0.05, 0.9, 0.05]], "float32")
    # the formula: cross-entropy against y (1 - e) + e / K, here [0.0333, 0.9333, 0.0333]
    target = y * 0.9 + 0.1 / 3
    np.testing.assert_allclose(float(smooth(y, p)), -np.sum(target * np.log(p)), rtol=1e-5)
    np.testing.assert_allclose(float(hard(y, p)), -np.log(0.9), rtol=1e-5)


def test_a_cosine_head_serves_the_softmax_of_its_scaled_cosines():
    from models import heads

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, _ = build.build_classifier("mobilenetv3small", 5, 32, head="arcface",
                                          head_scale=16.0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    head = model.get_layer("cosines")
    assert [w.name for w in head.weights] == ["kernel"]               # no bias
    assert head.kernel.dtype == "float32" and model.output.dtype == "float32"
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(images).numpy().sum(axis=1), 1.0, rtol=1e-5)
    # the head on features of a real scale: softmax(scale x cosines), by hand
    features = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
    layer, softmax = heads.CosineHead(5), heads.ScaledSoftmax(16.0)
    cos = layer(features).numpy()
    kernel = layer.kernel.numpy()
    by_hand = (features / np.linalg.norm(features, axis=1, keepdims=True)) @ (
        kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
    np.testing.assert_allclose(cos, by_hand, atol=1e-5)
    expected = np.exp(16 * by_hand) / np.exp(16 * by_hand).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax(cos).numpy(), expected, atol=1e-5)
    assert build.training_outputs(model, "arcface").output.name != model.output.name
    assert build.training_outputs(model, "softmax") is model
    with pytest.raises(ValueError, match="--head='angular'"):
        build.build_classifier("mobilenetv3small", 5, 32, head="angular")
    assert isinstance(losses.make_loss(head="cosface"), heads.MarginLoss)


def test_subcenter_arcface_takes_each_classs_nearest_subcentre_and_trains_only_that_one():
    from models import heads

    features = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    layer = heads.CosineHead(5, subcenters=3)
    cos = layer(features).numpy()
    kernel = layer.kernel.numpy()
    assert kernel.shape == (6, 15) and cos.shape == (4, 5)
    every = (features / np.linalg.norm(features, axis=1, keepdims=True)) @ (
        kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
    np.testing.assert_allclose(cos, every.reshape(4, 5, 3).max(axis=2), atol=1e-5)
    # the margin loss moves, per class and image, only the sub-centre nearest that image
    one = features[:1]
    with tf.GradientTape() as tape:
        loss = heads.MarginLoss("subcenter_arcface", scale=16.0)(
            tf.constant([[0, 1.0, 0, 0, 0]]), layer(one))
    moved = np.abs(tape.gradient(loss, layer.kernel).numpy()).sum(axis=0).reshape(5, 3) > 0
    nearest = every[0].reshape(5, 3).argmax(axis=1)
    np.testing.assert_array_equal(moved, np.eye(3, dtype=bool)[nearest])
    np.testing.assert_allclose(  # the same margin as arcface's, on the nearest cosine
        heads.margin_logits(cos, np.eye(5)[[1, 0, 2, 4]], "subcenter_arcface", 16.0, 0.5),
        heads.margin_logits(cos, np.eye(5)[[1, 0, 2, 4]], "arcface", 16.0, 0.5), rtol=1e-6)
    model, _ = build.build_classifier("mobilenetv3small", 5, 32, head="subcenter_arcface",
                                      subcenters=2)
    assert model.get_layer("cosines").kernel.shape == (576, 10)
    assert keras.models.model_from_json(model.to_json()).get_layer("cosines").subcenters == 2


def test_margins_apply_to_the_target_class_only_and_stay_finite():
    from models import heads

    cos = np.array([[0.5, 0.2, -0.95]], np.float32)
    target = np.array([[1.0, 0.0, 0.0]], np.float32)
    cosface = heads.margin_logits(cos, target, "cosface", 10.0, 0.35).numpy()
    np.testing.assert_allclose(cosface, [[10 * (0.5 - 0.35), 2.0, -9.5]], rtol=1e-5)
    arcface = heads.margin_logits(cos, target, "arcface", 10.0, 0.5).numpy()
    np.testing.assert_allclose(arcface[0, 0], 10 * np.cos(np.arccos(0.5) + 0.5), rtol=1e-5)
    np.testing.assert_allclose(arcface[0, 1:], [2.0, -9.5], rtol=1e-5)
    # past theta = pi - m the angle cannot grow: the linear fallback keeps the logit falling
    last = heads.margin_logits(cos, np.array([[0, 0, 1.0]], np.float32), "arcface", 10.0, 0.5)
    np.testing.assert_allclose(last.numpy()[0, 2], 10 * (-0.95 - 0.5 * np.sin(0.5)), rtol=1e-5)
    # a soft label (MixUp) carries its share of the margin
    half = heads.margin_logits(cos, np.array([[0.5, 0.5, 0]], np.float32), "cosface", 10.0, 0.2)
    np.testing.assert_allclose(half.numpy()[0, :2], [10 * (0.5 - 0.1), 10 * (0.2 - 0.1)],
                               rtol=1e-5)
    np.testing.assert_allclose(heads.margin_logits(cos, target, "normface", 10.0, 0.3), 10 * cos)
    # at cos = +-1 the gradient stays finite (sqrt(1 - cos^2) is kept away from 0)
    for value in (1.0, -1.0):
        edge = tf.constant([[value, 0.0, 0.0]])
        with tf.GradientTape() as tape:
            tape.watch(edge)
            loss = heads.MarginLoss("arcface", scale=1.0)(tf.constant([[1.0, 0, 0]]), edge)
        assert np.isfinite(tape.gradient(loss, edge).numpy()).all() and np.isfinite(loss)
    with pytest.raises(ValueError, match="--head_margin=2.0"):
        heads.MarginLoss("arcface", margin=2.0)
    with pytest.raises(ValueError, match="--head_scale=0"):
        heads.MarginLoss("cosface", scale=0)


def test_init_from_takes_the_classifier_by_class_name_and_the_neck_always(tmp_path):
    """--init_from's layers after the backbone: the same classes in another order give the
    earlier classifier with its columns reordered by name (so each class keeps its own
    weights) and the neck; other classes give a new classifier, the neck still loaded."""
    from models import init_from

    earlier_model, _ = build.build_classifier("mobilenetv3small", 3, 32, embedding_dim=8)
    path = str(tmp_path / "epoch_001-val_acc_0.5000.weights.h5")
    earlier_model.save_weights(path)
    earlier = init_from.EarlierRun("run", path, ["a", "b", "c"])
    kernel, bias = earlier_model.get_layer("probabilities").get_weights()

    arrays, note = init_from.head_arrays(earlier, ["c", "a", "b"])
    np.testing.assert_array_equal(arrays["probabilities"][0], kernel[:, [2, 0, 1]])
    np.testing.assert_array_equal(arrays["probabilities"][1], bias[[2, 0, 1]])
    assert {"embedding_projection", "embedding"} <= set(arrays)
    assert note == "the classifier too (the same 3 classes)"
    model, _ = build.build_classifier("mobilenetv3small", 3, 32, embedding_dim=8)
    assert set(init_from.apply_head(model, arrays)) == {"probabilities", "embedding",
                                                        "embedding_projection"}
    np.testing.assert_array_equal(model.get_layer("probabilities").get_weights()[0][:, 1],
                                  kernel[:, 0])  # class a, now column 1

    arrays, note = init_from.head_arrays(earlier, ["a", "b", "d", "e"])
    assert "probabilities" not in arrays and "embedding" in arrays
    assert note == "a new classifier: this job has 4 classes, the earlier run 3 (2 shared)"


def test_the_level_loss_sums_soft_labels_into_their_groups():
    """Items 0, 1 under category 0 and 2, 3 under 1: a label half item 0 and half item 1 is
    category 0 whole, so the loss is 0.5 x -log(0.8); half item 1 and half item 2 is half of
    each category."""
    from inputs.label_map import Level

    fn = losses.level_loss([Level(1, ["a", "b"], [0, 0, 1, 1])], [0.5])
    labels = np.array([[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0]], np.float32)
    heads = [np.array([[0.8, 0.2], [0.8, 0.2]], np.float32)]
    np.testing.assert_allclose(fn(labels, heads).numpy(),
                               [-0.5 * np.log(0.8), -0.5 * (0.5 * np.log(0.8) + 0.5 * np.log(0.2))],
                               rtol=1e-5)
