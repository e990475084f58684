"""Optimizers and learning-rate schedules (all from Keras 3), chosen by flag.

Schedules: plateau (a constant rate that ReduceLROnPlateau lowers when val_accuracy stalls, the
seeds' choice), cosine (linear warmup from 0, then cosine decay to 0), step (multiply by
`step_gamma` every `step_epochs`). Gradient clipping is not set here: under a multi-replica
strategy Keras' clipnorm clips each replica's share, so loop.py clips the all-reduced
gradient itself.
"""
import keras

OPTIMIZERS = ("adam", "sgd", "adamw")
SCHEDULES = ("plateau", "cosine", "step")


def make_schedule(name, learning_rate, steps_per_epoch, epochs, warmup_epochs=0.0,
                  step_epochs=10, step_gamma=0.1):
    """A float (plateau) or a keras LearningRateSchedule over optimizer steps."""
    if name == "plateau":
        return float(learning_rate)
    total = max(1, steps_per_epoch * epochs)
    if name == "cosine":
        warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
        if warmup <= 0:
            return keras.optimizers.schedules.CosineDecay(learning_rate, total)
        # CosineDecay's warmup starts from initial_learning_rate: start it from 0.
        return keras.optimizers.schedules.CosineDecay(
            0.0, total - warmup, warmup_target=learning_rate, warmup_steps=warmup)
    if name == "step":
        every = max(1, step_epochs * steps_per_epoch)
        boundaries = list(range(every, total, every))
        values = [learning_rate * step_gamma ** i for i in range(len(boundaries) + 1)]
        if not boundaries:
            return float(learning_rate)
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    raise ValueError(f"--lr_schedule={name!r}: use one of {', '.join(SCHEDULES)}")


def make_optimizer(name, schedule, weight_decay=1e-4, momentum=0.9):
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=schedule)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, nesterov=True)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    raise ValueError(f"--optimizer={name!r}: use one of {', '.join(OPTIMIZERS)}")


def current_learning_rate(optimizer):
    rate = optimizer.learning_rate
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)
