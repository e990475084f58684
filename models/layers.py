"""Layers the model needs beyond Keras' own: the backbone's input normalisation."""
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
