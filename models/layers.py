"""Layers the model needs beyond Keras' own: the backbone's input normalisation and GeM pooling."""
import keras
from keras import ops

# As keras.applications.imagenet_utils: caffe subtracts its BGR mean; torch uses the RGB mean
# and std of 0..1 images, written here on the 0..255 scale.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (123.675, 116.28, 103.53)
_TORCH_STD = (58.395, 57.12, 57.375)


@keras.saving.register_keras_serializable(package="modelarts_classifier")
class BackboneNormalization(keras.layers.Layer):
    """Turn RGB 0..255 input into what the backbone's ImageNet weights expect.

    caffe: RGB -> BGR minus the ImageNet mean (ResNet); torch: scale to 0..1, then mean/std
    (DenseNet); tf: scale to -1..1 (Xception); none: unchanged (EfficientNet and MobileNetV3
    normalise inside themselves). Same maths as keras.applications' preprocess_input, but as a
    layer, so it is part of the exported model."""

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "torch", "tf", "none"):
            raise ValueError(f"unknown normalisation {mode!r}")
        self.mode = mode

    def call(self, images):
        if self.mode == "caffe":
            return images[..., ::-1] - ops.convert_to_tensor(_CAFFE_BGR_MEAN, images.dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, images.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, images.dtype)
            return (images - mean) / std
        if self.mode == "tf":
            return images / 127.5 - 1.0
        return images

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="modelarts_classifier")
class GeMPooling(keras.layers.Layer):
    """Generalised-mean pooling (Radenović et al., 2018): (mean over H, W of x^p)^(1/p), with p
    learned (one scalar, started at `p`). p = 1 is average pooling and p -> inf max pooling;
    retrieval systems learn p near 3. Computed in float32 (x^p of float16 underflows)."""

    def __init__(self, p=3.0, epsilon=1e-6, **kwargs):
        kwargs.pop("dtype", None)  # always float32 (a saved config carries a dtype too)
        super().__init__(dtype="float32", **kwargs)
        if p < 1:
            raise ValueError(f"GeM's p starts at {p}: it must be at least 1")
        self.initial_p, self.epsilon = float(p), float(epsilon)

    def build(self, input_shape):
        # named gem_p: training/optim keeps it out of weight decay (a decayed p drifts to 1)
        self.p = self.add_weight(shape=(), name="gem_p",
                                 initializer=keras.initializers.Constant(self.initial_p))

    def call(self, features):
        p = ops.maximum(self.p, 1.0)  # below 1 it is no longer a mean that favours peaks
        x = ops.maximum(ops.cast(features, "float32"), self.epsilon)
        return ops.power(ops.mean(ops.power(x, p), axis=(1, 2)), 1.0 / p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "p": self.initial_p, "epsilon": self.epsilon}
