"""The classification loss: categorical crossentropy on softmax outputs, with optional label
smoothing. Binary crossentropy on a multi-class softmax (the 2019 baseline's bug, which made
Keras report a fake ~0.98 accuracy) is refused."""
import keras

from errors import UserError

from .heads import MarginLoss

ALLOWED = ("categorical_crossentropy",)


def make_loss(name="categorical_crossentropy", label_smoothing=0.0, reduction="sum_over_batch_size",
              head="softmax", head_scale=30.0, head_margin=None):
    """The loss for `head`: crossentropy on the softmax's probabilities, or a cosine head's
    margin loss on its cosines (models.build.training_outputs)."""
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
        return MarginLoss(head, head_scale, head_margin, label_smoothing, reduction)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing,
                                                reduction=reduction)
