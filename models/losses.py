"""The classification loss: categorical crossentropy on softmax outputs, or focal loss (the
product-recognition system's, for hard and rare classes), both with optional label smoothing;
per-class weights (--balance=class_weight) apply to either in the loop. Binary crossentropy on
a multi-class softmax (the 2019 baseline's bug, which made Keras report a fake ~0.98 accuracy)
is refused."""
import keras

from errors import UserError

from .heads import MarginLoss

ALLOWED = ("categorical_crossentropy", "focal")


def make_loss(name="categorical_crossentropy", label_smoothing=0.0, reduction="sum_over_batch_size",
              head="softmax", head_scale=30.0, head_margin=None, focal_gamma=2.0):
    """The loss for `head`: crossentropy (or focal loss, -(1 - p)^gamma log p summed over the
    smoothed target) on the softmax's probabilities, or a cosine head's margin loss on its
    cosines (models.build.training_outputs)."""
    if name in ("binary_crossentropy", "bce", "binary"):
        raise UserError(
            "--loss=binary_crossentropy is refused: on a multi-class softmax it treats every "
            "class as a separate yes/no question, training learns little and the accuracy "
            "Keras prints is fake (the 2019 garbage baseline's bug). Use "
            "categorical_crossentropy.")
    if name not in ALLOWED:
        raise UserError(f"--loss={name!r}: use one of {', '.join(ALLOWED)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise UserError(f"--label_smoothing={label_smoothing}: use a number in [0, 1)")
    if head != "softmax":
        if name == "focal":
            raise UserError(f"--loss=focal is for --head=softmax; --head={head} trains with "
                            "its own margin loss")
        return MarginLoss(head, head_scale, head_margin, label_smoothing, reduction)
    if name == "focal":
        if focal_gamma < 0:
            raise UserError(f"--focal_gamma={focal_gamma}: use 0 (plain crossentropy) or more")
        # alpha=1: Keras' default alpha=0.25 would scale the whole loss (and so the step) by
        # a quarter; class balance is --balance's job.
        return keras.losses.CategoricalFocalCrossentropy(
            alpha=1.0, gamma=focal_gamma, label_smoothing=label_smoothing, reduction=reduction)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing,
                                                reduction=reduction)


def level_loss(levels, weights):
    """Per-example loss of the auxiliary heads of coarser levels (--level_weights): for each
    level (inputs/label_map.Level) its weight x the crossentropy of its head's probabilities
    against the labels summed into its groups, so CutMix's and distillation's soft labels
    carry over. Called as fn(labels [B, classes], [head outputs, one per level])."""
    import tensorflow as tf

    groups = [(tf.constant(level.of_class, tf.int32), len(level.names)) for level in levels]

    def fn(labels, outputs):
        total = 0.0
        for (of_class, count), weight, probabilities in zip(groups, weights, outputs):
            coarse = tf.transpose(tf.math.unsorted_segment_sum(
                tf.transpose(tf.cast(labels, tf.float32)), of_class, count))
            total += weight * keras.losses.categorical_crossentropy(
                coarse, tf.cast(probabilities, tf.float32))
        return total

    return fn
