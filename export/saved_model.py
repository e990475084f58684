"""The SavedModel with the serving contract: a batch of encoded image bytes in, class
probabilities out, as `serving_default` (the mean over inputs/tta.py's test-time views when
exported with --tta). The decode / resize / pad steps inside the graph are
inputs.preprocess.bytes_to_input, the function the training pipeline used; the normalisation is
the model's own first layer. So training, evaluation and serving cannot drift apart.

More signatures serve retrieval: `embed` (the same bytes in, the pre-classifier feature out,
L2-normalised: [batch, D]; the embedding neck's output, else the pooled feature), `embed_flip`
(the mean of each image's and its mirror image's embeddings, L2-normalised: flip test-time
augmentation), `embed_multiscale` (the same mean over three scales of the image:
inputs.tta.multiscale_views) and `info` (backbone, input size, resize mode, D), so the
SavedModel alone can build and search a feature base (and `embed_crops`, the mean over the
crop views, in a package exported with --tta=crops); `pixels` serves decoded images, one view
(an ensemble's members: export/ensemble.py).

Every loader must restore it: TF2's `tf.saved_model.load`, and the TF1 loader that TF Serving,
`saved_model_cli run` and older ModelArts images use, on TensorFlow 2.6 as on today's.
"""
import keras
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from inputs import tta as views_of
from inputs.preprocess import bytes_to_input
from models.build import embedding_layer

# Ops today's saver writes that older runtimes lack (DisableCopyOnRead: TF >= 2.12, a no-op for
# a variable nobody reads sparsely); TF 2.6 refuses a SavedModel whose graph names one.
NEWER_THAN_THE_RUNTIME = {"DisableCopyOnRead"}


class ClassifierModule(tf.Module):
    """A trained Keras classifier wrapped for tf.saved_model.save."""

    def __init__(self, model, input_size, resize_mode, tta="none"):
        super().__init__()
        # The module tracks the TensorFlow variables themselves, not the Keras model: tracked
        # through Keras 3's variable wrappers, each weight is written twice into the TF1 graph
        # (the saver restores one copy, the signatures read the other, uninitialised one).
        self.variables_ = [weight.value for weight in model.weights]
        if not all(isinstance(v, tf.Variable) for v in self.variables_):
            raise TypeError("expected Keras' TensorFlow backend: its weights wrap tf.Variables")
        features = keras.Model(model.inputs, embedding_layer(model).output)
        self._networks = lambda: (model, features)  # untracked: called, never saved
        self.feature_dim = int(features.output_shape[-1])
        self.input_size = input_size
        self.resize_mode = resize_mode
        self.tta = tta  # serving_default's test-time views (inputs/tta.py)
        self.backbone = model.name.removesuffix("_classifier")  # models.build's naming

    def _pixels(self, images):
        return tf.map_fn(
            lambda data: bytes_to_input(data, self.input_size, self.resize_mode), images,
            fn_output_signature=tf.TensorSpec([self.input_size, self.input_size, 3],
                                              tf.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve(self, images):
        """encoded JPEG / PNG / GIF / BMP / WebP bytes [batch] -> probabilities [batch, classes],
        the mean over the test-time views (--tta; one network call for all of them)"""
        model, _ = self._networks()
        pixels = self._pixels(images)
        views = views_of.views(pixels, self.input_size, self.tta)
        probabilities = tf.cast(model(tf.concat(views, axis=0) if len(views) > 1 else pixels,
                                      training=False), tf.float32)
        return {"probabilities": views_of.mean_over_views(probabilities, tf.shape(pixels)[0],
                                                          len(views))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def embed(self, images):
        """encoded bytes [batch] -> L2-normalised embeddings [batch, D] (retrieval)"""
        _, network = self._networks()
        features = tf.cast(network(self._pixels(images), training=False), tf.float32)
        # a tiny epsilon: an untrained network's features can have norms near 1e-9
        return {"embeddings": tf.math.l2_normalize(features, axis=1, epsilon=1e-30)}

    def _mean_embedding(self, views):
        """The mean of the views' L2-normalised embeddings, L2-normalised: one network call
        over all views of the batch."""
        _, network = self._networks()
        features = tf.math.l2_normalize(tf.cast(network(tf.concat(views, axis=0),
                                                        training=False), tf.float32),
                                        axis=1, epsilon=1e-30)
        mean = views_of.mean_over_views(features, tf.shape(views[0])[0], len(views))
        return {"embeddings": tf.math.l2_normalize(mean, axis=1, epsilon=1e-30)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def embed_flip(self, images):
        """encoded bytes [batch] -> the mean of the image's and its mirror image's embeddings,
        L2-normalised [batch, D]; mirrored after the resize, so both see the same pixels"""
        pixels = self._pixels(images)
        return self._mean_embedding([pixels, pixels[:, :, ::-1, :]])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def embed_multiscale(self, images):
        """encoded bytes [batch] -> the mean embedding of three scales of each image
        (multiscale_views), L2-normalised [batch, D]"""
        return self._mean_embedding(views_of.multiscale_views(self._pixels(images),
                                                              self.input_size))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def embed_crops(self, images):
        """encoded bytes [batch] -> the mean embedding of the --tta=crops views (the image,
        its mirror, the corners of a 1.15x enlargement), L2-normalised [batch, D]"""
        return self._mean_embedding(views_of.views(self._pixels(images), self.input_size,
                                                   "crops"))

    @tf.function(input_signature=[])
    def info(self):
        """What made the embeddings: a feature base records it and refuses other models."""
        return {"backbone": tf.constant(self.backbone), "input_size": tf.constant(
            self.input_size), "resize_mode": tf.constant(self.resize_mode),
            "dim": tf.constant(self.feature_dim)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                name="pixels")])
    def serve_pixels(self, pixels):
        """Already decoded and resized float 0..255 images -> probabilities, one view (for
        callers that decode themselves, and the members of an ensemble, which take their own
        views; bytes stay the contract)."""
        model, _ = self._networks()
        return {"probabilities": tf.cast(model(pixels, training=False), tf.float32)}


def save(model, directory, input_size, resize_mode, tta="none"):
    """Write the SavedModel (saved_model.pb + variables/) into `directory`; serving_default
    averages the `tta` views' probabilities."""
    module = ClassifierModule(model, input_size, resize_mode, tta)
    signatures = {
        "serving_default": module.serve.get_concrete_function(),
        "pixels": module.serve_pixels.get_concrete_function(),
        "embed": module.embed.get_concrete_function(),
        "embed_flip": module.embed_flip.get_concrete_function(),
        "embed_multiscale": module.embed_multiscale.get_concrete_function(),
        "info": module.info.get_concrete_function()}
    if tta == "crops":  # retrieval's --embed_tta=crops: the views this package serves
        signatures["embed_crops"] = module.embed_crops.get_concrete_function()
    tf.saved_model.save(module, directory, signatures=signatures)
    drop_ops(directory, NEWER_THAN_THE_RUNTIME)
    return directory


def drop_ops(directory, op_types):
    """Remove side-effect-only ops of `op_types` (no outputs) from saved_model.pb, with the
    control edges to them, so runtimes that predate those ops load the model."""
    path = tf.io.gfile.join(directory, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
    for meta_graph in saved.meta_graphs:
        _drop_nodes(meta_graph.graph_def.node, op_types)
        for function in meta_graph.graph_def.library.function:
            gone = _drop_nodes(function.node_def, op_types)
            for key in [key for key, node in function.control_ret.items() if node in gone]:
                del function.control_ret[key]
            kept = [name for name in function.signature.control_output if name not in gone]
            del function.signature.control_output[:]
            function.signature.control_output.extend(kept)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved.SerializeToString())


def _drop_nodes(nodes, op_types):
    """Delete the nodes of `op_types` from a repeated NodeDef field; the deleted names."""
    gone = {node.name for node in nodes if node.op in op_types}
    kept = [node for node in nodes if node.name not in gone]
    for node in kept:
        inputs = [name for name in node.input if name.lstrip("^") not in gone]
        if len(inputs) < len(node.input):  # only control edges ("^name"): the ops have no outputs
            del node.input[:]
            node.input.extend(inputs)
    del nodes[:]
    nodes.extend(kept)
    return gone
