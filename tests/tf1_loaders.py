"""Run a SavedModel's serving_default and embed* signatures (those it has) on image files through both of
this TensorFlow's loaders: the TF1 session loader (TF Serving's way, restoring through the
saver) and tf.saved_model.load. Prints JSON. Python 3.7 syntax: it runs on the platform's
runtime.

    python tests/tf1_loaders.py MODEL_DIR IMAGE [IMAGE ...]
"""
import json
import sys

import tensorflow as tf

SIGNATURES = {"serving_default": "probabilities", "embed": "embeddings",
              "embed_flip": "embeddings", "embed_multiscale": "embeddings"}


def main(model_dir, paths):
    blobs = []
    for path in paths:
        with open(path, "rb") as f:
            blobs.append(f.read())
    results = {"tensorflow": tf.__version__, "tf1": {}, "tf2": {}}
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], model_dir)
        present = {name: key for name, key in SIGNATURES.items()
                   if name in meta_graph.signature_def}  # an ensemble has serving_default only
        for name, key in present.items():
            signature = meta_graph.signature_def[name]
            results["tf1"][name] = session.run(
                signature.outputs[key].name, {signature.inputs["images"].name: blobs}).tolist()
    loaded = tf.saved_model.load(model_dir)
    for name, key in present.items():
        results["tf2"][name] = loaded.signatures[name](
            images=tf.constant(blobs))[key].numpy().tolist()
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
