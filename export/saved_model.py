"""The SavedModel with the serving contract: a batch of encoded image bytes in, class
probabilities out, as `serving_default`. The decode / resize / pad steps inside the graph are
inputs.preprocess.bytes_to_input, the function the training pipeline used; the normalisation is
the model's own first layer. So training, evaluation and serving cannot drift apart.

Two more signatures serve retrieval: `embed` (the same bytes in, the pooled pre-classifier
feature out, L2-normalised: [batch, D]) and `info` (backbone, input size, resize mode, D),
so the SavedModel alone can build and search a feature base.
"""
import keras
import tensorflow as tf

from inputs.preprocess import bytes_to_input

POOL_LAYER = "pool"  # models.build's global average pooling: the embedding


class ClassifierModule(tf.Module):
    """A trained Keras classifier wrapped for tf.saved_model.save."""

    def __init__(self, model, input_size, resize_mode):
        super().__init__()
        self.model = model
        self.features = keras.Model(model.inputs, model.get_layer(POOL_LAYER).output)
        self.input_size = input_size
        self.resize_mode = resize_mode
        self.backbone = model.name.removesuffix("_classifier")  # models.build's naming

    def _pixels(self, images):
        return tf.map_fn(
            lambda data: bytes_to_input(data, self.input_size, self.resize_mode), images,
            fn_output_signature=tf.TensorSpec([self.input_size, self.input_size, 3],
                                              tf.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve(self, images):
        """encoded JPEG / PNG / GIF / BMP / WebP bytes [batch] -> probabilities [batch, classes]"""
        probabilities = tf.cast(self.model(self._pixels(images), training=False), tf.float32)
        return {"probabilities": probabilities}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def embed(self, images):
        """encoded bytes [batch] -> L2-normalised pooled features [batch, D] (retrieval)"""
        features = tf.cast(self.features(self._pixels(images), training=False), tf.float32)
        # a tiny epsilon: an untrained network's features can have norms near 1e-9
        return {"embeddings": tf.math.l2_normalize(features, axis=1, epsilon=1e-30)}

    @tf.function(input_signature=[])
    def info(self):
        """What made the embeddings: a feature base records it and refuses other models."""
        return {"backbone": tf.constant(self.backbone), "input_size": tf.constant(
            self.input_size), "resize_mode": tf.constant(self.resize_mode),
            "dim": tf.constant(int(self.features.output_shape[-1]))}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                name="pixels")])
    def serve_pixels(self, pixels):
        """Already decoded and resized float 0..255 images -> probabilities (for callers that
        decode themselves; bytes stay the contract)."""
        return {"probabilities": tf.cast(self.model(pixels, training=False), tf.float32)}


def save(model, directory, input_size, resize_mode):
    """Write the SavedModel (saved_model.pb + variables/) into `directory`."""
    module = ClassifierModule(model, input_size, resize_mode)
    # No saver function in the graph: its DisableCopyOnRead op (TF >= 2.12) would stop older
    # runtimes from loading the model at all; variables still restore by the object graph.
    tf.saved_model.save(module, directory, signatures={
        "serving_default": module.serve.get_concrete_function(),
        "pixels": module.serve_pixels.get_concrete_function(),
        "embed": module.embed.get_concrete_function(),
        "info": module.info.get_concrete_function()},
        options=tf.saved_model.SaveOptions(experimental_skip_saver=True))
    return directory
