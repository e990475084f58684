"""The SavedModel: bytes in, the same probabilities as the in-process model on the evaluation
pipeline, after a reload in a fresh TensorFlow function graph."""
import keras
import numpy as np
import tensorflow as tf

from export import saved_model
from inputs import layouts, pipeline
from models import build
from tests.images import digit_image, encode, write


def test_saved_model_on_bytes_equals_the_model_on_the_eval_pipeline(tmp_path):
    for i in range(6):
        image, _ = digit_image(i, 40 + 7 * i)  # several sizes: the letterbox does work
        write(tmp_path / "data" / f"c{i % 2}" / f"{i}.jpg", encode(image))
    write(tmp_path / "data" / "c0" / "wide.png", encode(digit_image(9, 30)[0].resize((60, 24)),
                                                        "PNG"))
    samples = layouts.read_index(str(tmp_path / "data")).samples
    model, _ = build.build_classifier("mobilenetv3small", 2, 32)
    expected = np.concatenate([model(x, training=False).numpy()
                               for x, _ in pipeline.eval_dataset(samples, 2, 4, 32)])

    saved_model.save(model, str(tmp_path / "model"), 32, "letterbox")
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    serve = loaded.signatures["serving_default"]
    data = tf.constant([open(s.path, "rb").read() for s in samples])
    got = serve(images=data)["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert set(loaded.signatures) == {"serving_default", "pixels", "embed", "embed_flip",
                                      "embed_multiscale", "info"}
    # embed: the pooled pre-classifier feature of the same pictures, L2-normalised
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)
    features = np.concatenate([pooled(x, training=False).numpy()
                               for x, _ in pipeline.eval_dataset(samples, 2, 4, 32)])
    embeddings = loaded.signatures["embed"](images=data)["embeddings"].numpy()
    np.testing.assert_allclose(embeddings, features / np.linalg.norm(features, axis=1,
                                                                      keepdims=True), atol=1e-5)
    # embed_flip: the mean with the embedding of the same pixels mirrored (padding and all)
    pixels = tf.map_fn(lambda b: saved_model.bytes_to_input(b, 32, "letterbox"), data,
                       fn_output_signature=tf.float32)
    mirrored = pooled(pixels[:, :, ::-1, :], training=False).numpy()
    mean = embeddings + mirrored / np.linalg.norm(mirrored, axis=1, keepdims=True)
    flipped = loaded.signatures["embed_flip"](images=data)["embeddings"].numpy()
    np.testing.assert_allclose(flipped, mean / np.linalg.norm(mean, axis=1, keepdims=True),
                               atol=1e-5)
    assert np.abs(flipped - embeddings).max() > 1e-3  # the mirror image changed something
    # embed_multiscale: the mean over the pixels, the pixels shrunk to 23 px and enlarged
    # back, and their central 23 x 23 enlarged to 32 (1/sqrt(2) of 32 is 22.6)
    coarse = tf.image.resize(tf.image.resize(pixels, [23, 23]), [32, 32])
    fine = tf.image.resize(pixels[:, 4:27, 4:27, :], [32, 32])
    views = [embeddings] + [pooled(v, training=False).numpy() for v in (coarse, fine)]
    mean = sum(v / np.linalg.norm(v, axis=1, keepdims=True) for v in views)
    scaled = loaded.signatures["embed_multiscale"](images=data)["embeddings"].numpy()
    np.testing.assert_allclose(scaled, mean / np.linalg.norm(mean, axis=1, keepdims=True),
                               atol=1e-5)
    assert np.abs(scaled - embeddings).max() > 1e-3 and np.abs(scaled - flipped).max() > 1e-3
    info = {k: v.numpy() for k, v in loaded.signatures["info"]().items()}
    assert (info["backbone"], info["input_size"], info["resize_mode"], info["dim"]) == (
        b"mobilenetv3small", 32, b"letterbox", features.shape[1])
    # The default runtime is TensorFlow 2.6: every op of the graph must exist there. A new op
    # here must be checked against TF 2.6's op list before it is added to this one.
    assert op_types(tmp_path / "model") <= TF_2_6_OPS, op_types(tmp_path / "model") - TF_2_6_OPS


def test_embed_gives_the_necks_output_with_gem_pooling(tmp_path):
    """With --pooling=gem and --embedding_dim=8, `embed` is the neck's BatchNorm output of the
    same pictures (not the pooled feature), L2-normalised, and `info` says 8 dimensions."""
    data = tf.constant([encode(digit_image(i, 30 + 5 * i)[0]) for i in range(3)])
    model, _ = build.build_classifier("mobilenetv3small", 3, 32, pooling="gem",
                                      embedding_dim=8)
    neck = model.get_layer("embedding")  # statistics away from 0 / 1, so the neck does work
    neck.moving_mean.assign(np.full(8, 0.5, "float32"))
    neck.moving_variance.assign(np.full(8, 4.0, "float32"))
    saved_model.save(model, str(tmp_path / "model"), 32, "letterbox")
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    pixels = tf.map_fn(lambda b: saved_model.bytes_to_input(b, 32, "letterbox"), data,
                       fn_output_signature=tf.float32)
    features = keras.Model(model.inputs, neck.output)(pixels, training=False).numpy()
    embeddings = loaded.signatures["embed"](images=data)["embeddings"].numpy()
    np.testing.assert_allclose(embeddings, features / np.linalg.norm(features, axis=1,
                                                                      keepdims=True), atol=1e-5)
    assert int(loaded.signatures["info"]()["dim"]) == 8
    assert op_types(tmp_path / "model") <= TF_2_6_OPS, op_types(tmp_path / "model") - TF_2_6_OPS


TF_2_6_OPS = {
    "AddV2", "All", "Assert", "AssignVariableOp", "BiasAdd", "Cast", "Const", "Conv2D",
    "DecodeImage", "DecodeJpeg", "DepthwiseConv2dNative", "Equal", "ExpandDims",
    "ExtractJpegShape", "Floor", "FloorDiv", "GreaterEqual", "Identity", "Less", "LogicalAnd",
    "MatMul", "Max", "Maximum", "Mean", "Minimum", "Mul", "NoOp", "Pack", "Pad", "Placeholder",
    "Range", "ReadVariableOp", "RealDiv", "Relu", "Relu6", "Reshape", "ResizeBilinear", "Rsqrt",
    "SelectV2", "Shape", "Softmax", "Squeeze", "PartitionedCall", "StatefulPartitionedCall", "StatelessCase",
    "StatelessIf", "StridedSlice", "Sub", "Substr", "TensorListFromTensor", "TensorListGetItem",
    "TensorListReserve", "TensorListSetItem", "TensorListStack", "Unpack", "VarHandleOp",
    "VarIsInitializedOp", "While", "IdentityN",
    # not in this test's MobileNetV3 but in the other backbones (ResNet50: BatchNorm is folded
    # by Keras into these same ops; pooling)
    "MaxPool", "AvgPool", "Sigmoid", "Tanh", "Square", "Sqrt", "Pow", "Neg", "Exp", "Log",
    "Sum", "ConcatV2", "Transpose", "Tile", "Fill", "ZerosLike", "Erf",
    # an ensemble's: its own decode loop, and a member's classes put in order
    "StatelessWhile", "Min", "GatherV2",
    # the saver, which TF1 loaders (TF Serving, saved_model_cli) restore the variables with
    "SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StaticRegexFullMatch",
    "StringJoin", "Select"}


def op_types(folder):
    """Every op type in a SavedModel's graphs and functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    return ({n.op for n in graph.node}
            | {n.op for f in graph.library.function for n in f.node_def})


def test_publish_to_obs_replaces_only_when_asked_and_sends_saved_model_pb_last(
        bucket, tmp_path, monkeypatch):
    import pytest

    import obs_utils
    from export import package

    model, _ = build.build_classifier("mobilenetv3small", 3, 32)
    folder = package.build(model, ["a", "b", "c"], 32, "letterbox", None, "",
                           str(tmp_path / "stage" / "model"))
    url = f"obs://{bucket}/out"
    obs_utils.write_text(f"{url}/model/stale.txt", "a user's file")
    with pytest.raises(package.PackageError, match="--overwrite_model=true"):
        package.publish(folder, url, overwrite=False)
    assert obs_utils.read_text(f"{url}/model/stale.txt") == "a user's file"

    # Every object written, in order, at the lowest level (uploads and copies inside the
    # store, whether obs_utils.copy or copy_tree's threads make them).
    from obs_utils import s3

    written, real_upload, real_server_copy = [], s3.upload, s3.server_copy
    monkeypatch.setattr(s3, "upload", lambda path, b, key, *a: (
        written.append(key), real_upload(path, b, key, *a))[1])
    monkeypatch.setattr(s3, "server_copy", lambda sb, info, db, key, *a: (
        written.append(key), real_server_copy(sb, info, db, key, *a))[1])
    package.publish(folder, url, overwrite=True)
    names = set(obs_utils.listdir(f"{url}/model", recursive=True))
    assert "stale.txt" not in names
    assert {"saved_model.pb", "variables/variables.index", "config.json", "labels.json",
            "customize_service.py", "serving/check.py"} <= names
    into_model = [key for key in written if key.startswith("out/model/")]
    assert into_model[-1] == "out/model/saved_model.pb", into_model  # the mark, last
    assert into_model.count("out/model/saved_model.pb") == 1 and package.complete(url)
    assert not obs_utils.is_dir(f"{url}/.model-staging")

    # A job stopped while the new package uploads (the long part) leaves the old one whole.
    old = obs_utils.read_bytes(f"{url}/model/variables/variables.index")
    real_tree = obs_utils.copy_tree

    def cut_short(src, dst, *args, **kwargs):
        if dst.endswith(".model-staging"):
            raise obs_utils.ObsError("connection reset (the job was pre-empted)")
        return real_tree(src, dst, *args, **kwargs)

    monkeypatch.setattr(obs_utils, "copy_tree", cut_short)
    other, _ = build.build_classifier("mobilenetv3small", 3, 32)
    folder = package.build(other, ["a", "b", "c"], 32, "letterbox", None, "",
                           str(tmp_path / "stage2" / "model"))
    with pytest.raises(obs_utils.ObsError):
        package.publish(folder, url, overwrite=True)
    assert package.complete(url)
    assert obs_utils.read_bytes(f"{url}/model/variables/variables.index") == old


def test_the_tf1_loader_and_saved_model_cli_restore_what_tf2_loads(demo_run, tmp_path):
    """TF Serving, `saved_model_cli run` and older images restore variables through the
    SavedModel's saver in a TF1 session: both signatures of the package train.py wrote must
    give what TF2's loader gives (a weight restored into the wrong variable, or left unset,
    would not)."""
    import subprocess
    import sys

    folder = str(demo_run.out / "model")
    blobs = [encode(digit_image(i, 30 + 5 * i)[0]) for i in range(3)]
    loaded = tf.saved_model.load(folder)
    tf2 = {name: loaded.signatures[name](images=tf.constant(blobs))[key].numpy()
           for name, key in (("serving_default", "probabilities"), ("embed", "embeddings"))}
    assert len(set(tf2["serving_default"].argmax(axis=1))) > 1  # the images are told apart

    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], folder)
        for name, key in (("serving_default", "probabilities"), ("embed", "embeddings")):
            signature = meta_graph.signature_def[name]
            got = session.run(signature.outputs[key].name,
                              {signature.inputs["images"].name: blobs})
            np.testing.assert_allclose(got, tf2[name], atol=1e-6, err_msg=name)

    np.save(tmp_path / "one.npy", np.array(blobs[:1]))  # fixed-width bytes: no pickle needed
    for name, key in (("serving_default", "probabilities"), ("embed", "embeddings")):
        proc = subprocess.run(
            [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run",
             "--dir", folder, "--tag_set", "serve", "--signature_def", name,
             "--inputs", f"images={tmp_path / 'one.npy'}", "--outdir", str(tmp_path / name)],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        np.testing.assert_allclose(np.load(tmp_path / name / f"{key}.npy"), tf2[name][:1],
                                   atol=1e-6, err_msg=name)
