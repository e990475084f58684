"""Ensembles and test-time views: `train.py --mode=ensemble` packages up to three models whose
serving signature gives their weighted mean probability over the views, held here against
each member's own package run on the mirrored image files (no code of ours in between); a
single model's --tta serves what its evaluation measured; bad member lists are one line."""
import functools
import io
import json
import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import obs_utils
from inputs import label_map, layouts
from inputs import tta as tta_views
from tests import ensembles
from tests.images import digit_image, encode
from tests.servers import PredictorServer
from tests.test_export import TF_2_6_OPS, op_types
from tests.test_serving import assert_matches


def square_pictures():
    """PNGs of digits, square (a mirrored square image resizes to the mirrored resize: no
    padding to move), of several sizes."""
    return [encode(digit_image(700 + i, side)[0], "PNG")
            for i, side in enumerate((20, 33, 48, 64))]


def mirrored(blob):
    return encode(Image.open(io.BytesIO(blob)).transpose(Image.FLIP_LEFT_RIGHT), "PNG")


@functools.lru_cache(maxsize=None)
def _serving(folder):
    return tf.saved_model.load(folder).signatures["serving_default"]


def serve(folder, blobs):
    """A package's serving_default on encoded images (each package loaded once)."""
    return _serving(str(folder))(images=tf.constant(blobs))["probabilities"].numpy()


def test_the_ensemble_serves_its_members_weighted_mean_over_the_flip_views(ensemble_run):
    names = label_map.load(str(ensemble_run.package / label_map.FILE_NAME))
    blobs = square_pictures()
    flips = [mirrored(b) for b in blobs]
    want = 0.0
    for folder, weight in zip(ensemble_run.members, ensemble_run.weights):
        own = label_map.load(str(folder / label_map.FILE_NAME))
        columns = [own.index(name) for name in names]  # the member's order -> the ensemble's
        want = want + weight * ((serve(folder, blobs) + serve(folder, flips)) / 2)[:, columns]
    want = want / sum(ensemble_run.weights)
    got = serve(ensemble_run.package, blobs)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.ptp(got, axis=0).max() > 1e-2  # the pictures are told apart: it can fail
    assert np.abs(got - serve(ensemble_run.members[0], blobs)).max() > 1e-3  # not one member

    description = json.loads((ensemble_run.package / "ensemble.json").read_text())
    assert description["tta"] == "flip" and description["views"] == 2
    assert [(m["input_size"], m["resize_mode"], m["weight"]) for m in description["members"]] \
        == [(32, "letterbox", 1.0), (40, "stretch", 2.0), (32, "letterbox", 1.0)]
    assert op_types(ensemble_run.package) <= TF_2_6_OPS

    # Its metrics, in config.json as on the model page, are its serving signature's on the
    # test images.
    index = layouts.read_index(ensemble_run.test)
    probabilities = serve(ensemble_run.package, [open(s.path, "rb").read()
                                                 for s in index.samples])
    top1 = float(np.mean(probabilities.argmax(1) == [s.label for s in index.samples]))
    metrics = json.loads((ensemble_run.root / "out" / "evaluation" / "metrics.json").read_text())
    config = json.loads((ensemble_run.package / "config.json").read_text())
    assert metrics["top1_accuracy"] == pytest.approx(top1)
    assert config["metrics"]["accuracy"] == round(top1, 4)
    assert index.class_names == names


def test_the_local_server_serves_the_ensemble_package(ensemble_run):
    names = label_map.load(str(ensemble_run.package / label_map.FILE_NAME))
    blob = square_pictures()[1]
    server = PredictorServer(str(ensemble_run.package))
    try:
        import requests

        reply = requests.post(server.url + "/", files={"images": ("seven.png", blob)},
                              timeout=60)
        assert reply.status_code == 200, reply.text + server.output()[-2000:]
    finally:
        server.stop()
    assert_matches(reply.json(), serve(ensemble_run.package, [blob])[0], names)


def test_one_member_from_s3_without_views_is_the_member_itself(demo_run, bucket, tmp_path):
    import train

    obs_utils.copy_tree(str(demo_run.out / "model"), f"s3://{bucket}/runs/demo/model",
                        progress=False)
    assert train.main(["--mode=ensemble", f"--members=s3://{bucket}/runs/demo",
                       f"--train_url={tmp_path / 'one'}",
                       f"--local_data_root={tmp_path / 'cache'}"]) == 0
    blobs = square_pictures()
    np.testing.assert_allclose(serve(tmp_path / "one" / "model", blobs),
                               serve(demo_run.out / "model", blobs), atol=1e-6)
    assert "metrics" not in json.loads((tmp_path / "one" / "model" / "config.json").read_text())


def test_member_lists_that_cannot_make_an_ensemble_are_one_line_and_exit_2(
        ensemble_run, tmp_path, caplog, clean_storage_env):
    import train

    other = tmp_path / "other" / "model"
    shutil.copytree(ensemble_run.members[2], other)
    labels = json.loads((other / label_map.FILE_NAME).read_text())
    labels["0"] = "cat"
    (other / label_map.FILE_NAME).write_text(json.dumps(labels))
    (tmp_path / "empty").mkdir()
    demo = str(ensemble_run.members[0])
    cases = [
        ([], "--mode=ensemble needs --members"),
        ([f"--members={demo},{demo},{demo},{demo}"], "an ensemble takes 1 to 3"),
        ([f"--members={demo},{demo}", "--member_weights=1,2,3"], "gives 3 weights for 2"),
        ([f"--members={tmp_path / 'empty'}"], "holds no model package"),
        ([f"--members={demo},{other}"], "name different classes (only in the first: ["),
        ([f"--members={demo}", f"--train_url={ensemble_run.root / 'out'}"],
         "already holds a model package"),
    ]
    for flags, message in cases:
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            code = train.main(["--mode=ensemble", f"--train_url={tmp_path / 'out'}",
                               f"--local_data_root={tmp_path / 'cache'}", *flags])
        assert code == 2, flags
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and message in errors[0].getMessage(), (flags, caplog.text)
        assert not errors[0].exc_info  # one line, no traceback
    assert not (tmp_path / "out" / "model").exists()

    import retrieve  # an ensemble serves classes: retrieval is sent to a member

    caplog.clear()
    assert retrieve.main(["index", f"--model_dir={ensemble_run.package}",
                          f"--data_url={ensemble_run.test}", f"--index_url={tmp_path / 'g.h5'}",
                          f"--local_data_root={tmp_path / 'cache'}"]) == 2
    assert "is an ensemble (train.py --mode=ensemble), which serves classes only" in caplog.text
    caplog.clear()
    assert retrieve.main(["index", f"--model_dir={demo}", "--embed_tta=crops",
                          f"--data_url={ensemble_run.test}", f"--index_url={tmp_path / 'g.h5'}",
                          f"--local_data_root={tmp_path / 'cache'}"]) == 2
    assert "needs a package exported with train.py --tta=crops" in caplog.text


def test_the_crop_views_are_the_mirror_and_the_corners_of_an_enlargement():
    size = 20
    pixels = np.zeros((1, size, size, 3), np.float32)
    corners = {(0, 0): 10.0, (0, -1): 20.0, (-1, 0): 30.0, (-1, -1): 40.0}
    for (row, col), value in corners.items():  # 2 x 2 blocks, one colour at each corner
        rows = slice(0, 2) if row == 0 else slice(size - 2, size)
        cols = slice(0, 2) if col == 0 else slice(size - 2, size)
        pixels[0, rows, cols] = value
    views = [v.numpy() for v in tta_views.views(tf.constant(pixels), size, "crops")]
    assert len(views) == tta_views.count("crops") == 6
    assert all(v.shape == pixels.shape for v in views)
    np.testing.assert_array_equal(views[0], pixels)
    np.testing.assert_array_equal(views[1], pixels[:, :, ::-1])
    for view, (corner, value) in zip(views[2:], corners.items()):
        assert view[0, corner[0], corner[1], 0] == pytest.approx(value, abs=1e-4)
        opposite = (-1 - corner[0], -1 - corner[1])  # 1.15x: the far corner is cut off
        assert view[0, opposite[0], opposite[1], 0] == 0.0, (corner, view[0, :, :, 0])


def test_a_single_models_tta_serves_what_its_evaluation_measured(demo_run, tmp_path):
    from evaluation import inference
    from export import saved_model

    model, _ = ensembles.demo_model(str(demo_run.out), 32)
    samples = layouts.read_index(ensembles.labelled_subset(
        str(demo_run.root), str(tmp_path / "images"), count=12)).samples
    saved_model.save(model, str(tmp_path / "model"), 32, "letterbox", tta="crops")
    got = serve(tmp_path / "model", [open(s.path, "rb").read() for s in samples])
    want = inference.keras_probabilities(model, samples, 32, "letterbox", 5, tta="crops")
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = inference.keras_probabilities(model, samples, 32, "letterbox", 5)
    assert np.abs(got - plain).max() > 1e-3  # the views changed something: it can fail
    assert op_types(tmp_path / "model") <= TF_2_6_OPS

    # embed_crops (retrieval's --embed_tta=crops): the mean of the views' unit embeddings
    import keras

    from inputs.preprocess import bytes_to_input

    blobs = tf.constant([open(s.path, "rb").read() for s in samples])
    pixels = tf.stack([bytes_to_input(b, 32, "letterbox") for b in blobs])
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)
    views = [pooled(v, training=False).numpy() for v in tta_views.views(pixels, 32, "crops")]
    mean = sum(v / np.linalg.norm(v, axis=1, keepdims=True) for v in views)
    embedded = tf.saved_model.load(str(tmp_path / "model")).signatures["embed_crops"](
        images=blobs)["embeddings"].numpy()
    np.testing.assert_allclose(embedded, mean / np.linalg.norm(mean, axis=1, keepdims=True),
                               atol=1e-5)
