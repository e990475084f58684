"""Cosine-softmax heads (NormFace, CosFace, ArcFace, sub-center ArcFace): the better
embedding for retrieval and a help with imbalanced classes. Nothing in Keras 3 provides them.

The head computes cosines between the L2-normalised feature and L2-normalised class weights
(no bias), in float32 also under mixed precision. Serving keeps the classifier contract:
probabilities = softmax(scale x cosines). The margin exists only in the training loss, on the
target class (MarginLoss), so the exported model needs no labels. Sub-center ArcFace (Deng et
al. 2020) gives each class several weight vectors and takes the nearest one's cosine, so a
class's odd or mislabelled images gather at a sub-centre of their own instead of pulling the
class's one centre away from its clean images.
"""
import math

import keras
from keras import ops

from errors import UserError

HEADS = ("softmax", "normface", "cosface", "arcface", "subcenter_arcface")
DEFAULT_MARGIN = {"softmax": 0.0, "normface": 0.0, "cosface": 0.35, "arcface": 0.5,
                  "subcenter_arcface": 0.5}
ANGULAR = ("arcface", "subcenter_arcface")  # the margin is added to the angle
_EPSILON = 1e-7  # keeps sin(theta) = sqrt(1 - cos^2) away from 0: no infinite gradient


@keras.saving.register_keras_serializable(package="modelarts_classifier")
class CosineHead(keras.layers.Layer):
    """features [B, D] -> cosines [B, classes] against normalised class weights, no bias; with
    `subcenters` K > 1, K weight vectors per class (kernel columns c*K .. c*K+K-1) and the
    largest of their cosines."""

    def __init__(self, classes, subcenters=1, **kwargs):
        kwargs.pop("dtype", None)  # always float32 (a saved config carries a dtype too)
        super().__init__(dtype="float32", **kwargs)
        self.classes, self.subcenters = classes, int(subcenters)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.classes * self.subcenters),
                                      name="kernel", initializer="glorot_uniform")

    def call(self, features):
        features = ops.normalize(ops.cast(features, "float32"), axis=-1, epsilon=1e-12)
        kernel = ops.normalize(self.kernel, axis=0, epsilon=1e-12)
        cosines = ops.clip(ops.matmul(features, kernel), -1.0, 1.0)
        if self.subcenters > 1:
            cosines = ops.max(ops.reshape(cosines, (-1, self.classes, self.subcenters)), axis=-1)
        return cosines

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "subcenters": self.subcenters}


@keras.saving.register_keras_serializable(package="modelarts_classifier")
class ScaledSoftmax(keras.layers.Layer):
    """cosines -> softmax(scale x cosines): what serving returns as probabilities."""

    def __init__(self, scale, **kwargs):
        kwargs.pop("dtype", None)  # always float32 (a saved config carries a dtype too)
        super().__init__(dtype="float32", **kwargs)
        self.scale = float(scale)

    def call(self, cosines):
        return ops.softmax(self.scale * cosines, axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def margin_logits(cosines, labels, kind, scale, margin):
    """scale x cosines, with the margin on the target class (weighted by the label, so soft
    MixUp / CutMix labels share it): cosface subtracts `margin`, arcface adds it to the angle
    (cos(theta + m), with the usual linear fallback cos - m sin(m) past theta = pi - m)."""
    cosines = ops.cast(cosines, "float32")
    labels = ops.cast(labels, "float32")
    if kind == "cosface":
        target = cosines - margin
    elif kind in ANGULAR:
        sine = ops.sqrt(ops.maximum(1.0 - ops.square(cosines), _EPSILON))
        shifted = cosines * math.cos(margin) - sine * math.sin(margin)
        target = ops.where(cosines > math.cos(math.pi - margin), shifted,
                           cosines - margin * math.sin(margin))
    else:  # normface: no margin
        target = cosines
    return scale * (cosines + labels * (target - cosines))


class MarginLoss(keras.losses.Loss):
    """Categorical crossentropy of margin_logits: the training loss of a cosine head. Labels
    may be one-hot or soft; label smoothing applies to the crossentropy's target."""

    def __init__(self, kind, scale=30.0, margin=None, label_smoothing=0.0,
                 reduction="sum_over_batch_size", name=None):
        super().__init__(reduction=reduction, name=name or f"{kind}_loss")
        if kind not in HEADS[1:]:
            raise UserError(f"--head={kind!r}: a margin loss needs one of {HEADS[1:]}")
        self.kind, self.scale = kind, float(scale)
        self.margin = DEFAULT_MARGIN[kind] if margin is None else float(margin)
        self.label_smoothing = float(label_smoothing)
        if self.scale <= 0:
            raise UserError(f"--head_scale={scale}: use a positive number (30 is usual)")
        if not 0.0 <= self.margin < (math.pi / 2 if kind in ANGULAR else 1.0):
            raise UserError(f"--head_margin={margin}: use 0 to "
                             f"{'pi/2' if kind in ANGULAR else '1'} ({kind}'s usual: "
                             f"{DEFAULT_MARGIN[kind]})")

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        logits = margin_logits(y_pred, y_true, self.kind, self.scale, self.margin)
        if self.label_smoothing:
            classes = ops.cast(ops.shape(y_true)[-1], "float32")
            y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / classes
        return -ops.sum(y_true * ops.log_softmax(logits, axis=-1), axis=-1)
