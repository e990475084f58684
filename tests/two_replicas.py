"""Run as a script: the training step on MirroredStrategy over two logical CPU devices (the code
path of several GPUs), printing JSON facts for tests/test_distributed.py to check.

A separate process, because logical devices must be set before TensorFlow starts."""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from training.loop import Loop, StepConfig  # noqa: E402
from training.optim import (AveragedWeights, make_optimizer, reset_state,  # noqa: E402
                            scale_learning_rates)


def linear_model():
    """probabilities = softmax(x W), W starting at zero: gradients are easy to know."""
    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(2, use_bias=False, kernel_initializer="zeros",
                                 activation="softmax", dtype="float32")(inputs)
    return keras.Model(inputs, outputs)


ALL_REDUCES = []  # one entry per ReplicaContext.all_reduce call made while a step is traced


def _counting(all_reduce):
    def counted(self, *args, **kwargs):
        ALL_REDUCES.append(1)
        return all_reduce(self, *args, **kwargs)
    return counted


tf.distribute.ReplicaContext.all_reduce = _counting(tf.distribute.ReplicaContext.all_reduce)


def two_layer_model():
    """softmax(relu(x A) B), A the "backbone" (the identity at the start), B the head."""
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(2, use_bias=False, kernel_initializer="identity",
                                activation="relu", dtype="float32", name="backbone")(inputs)
    outputs = keras.layers.Dense(2, use_bias=False, kernel_initializer="ones",
                                 activation="softmax", dtype="float32", name="head")(hidden)
    return keras.Model(inputs, outputs)


def one_step(strategy, x, y, clipnorm, mixed=False, lr=1.0, xla=False, gc=False, ema=0.0,
             steps=1, ranger=False, backbone_lr_mult=None):
    with strategy.scope():
        model = linear_model() if backbone_lr_mult is None else two_layer_model()
        if ranger:  # --optimizer=ranger --weight_decay=0.1
            optimizer = make_optimizer("ranger", lr, 0.1, ema=ema)
        elif backbone_lr_mult is not None:  # --optimizer=adamw --weight_decay=0.1
            optimizer = make_optimizer("adamw", lr, 0.1)
        else:
            optimizer = keras.optimizers.SGD(learning_rate=lr, use_ema=ema > 0,
                                             ema_momentum=ema or 0.99)
        if mixed:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        if backbone_lr_mult is not None:
            scale_learning_rates(optimizer, model.get_layer("backbone").trainable_variables,
                                 backbone_lr_mult)
        loss = keras.losses.CategoricalCrossentropy(reduction=None)
    loop = Loop(strategy, model, optimizer, loss, StepConfig(len(x), clipnorm, jit_compile=xla,
                                                         grad_centralization=gc))
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    for _ in range(steps):
        sums = loop.train_step(iterator)
    if ema:
        averaged = AveragedWeights(optimizer)
        trained = model.get_weights()[0]
        averaged.swap_in()
        average = model.get_weights()[0]
        averaged.swap_out()
        return {"trained": trained.tolist(), "average": average.tolist(),
                "back": model.get_weights()[0].tolist()}
    if backbone_lr_mult is not None:
        return [w.tolist() for w in model.get_weights()]
    return model.get_weights()[0], [float(v) for v in sums[:4]]


def staged_steps(strategy, x, y, mixed=False):
    """The staged unfreeze's mechanics (training/phases.py): 2 steps with the "backbone"
    layer frozen, then it unfreezes (a fresh optimizer, the step traced again) for 2 more;
    adamw with weight decay. [backbone after the frozen steps, final weights...]."""
    with strategy.scope():
        model = two_layer_model()
        optimizer = make_optimizer("adamw", 0.1, 0.1)
        if mixed:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        loss = keras.losses.CategoricalCrossentropy(reduction=None)
    loop = Loop(strategy, model, optimizer, loss, StepConfig(len(x), 0.0))
    iterator = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((x, y)).repeat()))
    model.get_layer("backbone").trainable = False
    for _ in range(2):
        loop.train_step(iterator)
    frozen = model.get_layer("backbone").get_weights()[0].tolist()
    model.get_layer("backbone").trainable = True
    reset_state(optimizer)
    loop.retrace()
    for _ in range(2):
        loop.train_step(iterator)
    return [frozen] + [w.tolist() for w in model.get_weights()]


def validation_gap(strategy):
    """Loop.evaluate's GAP over 8 images in batches of 4 (two per replica on two): the
    confidences are gathered across replicas, not summed."""
    with strategy.scope():
        inputs = keras.Input((2,))
        model = keras.Model(inputs, keras.layers.Dense(
            3, kernel_initializer=keras.initializers.RandomNormal(seed=3),
            activation="softmax", dtype="float32")(inputs))
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
        loss = keras.losses.CategoricalCrossentropy(reduction=None)
    loop = Loop(strategy, model, optimizer, loss, StepConfig(4, 0.0))
    x = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2, 0, 1]]
    val = loop.evaluate(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(4)))
    return {"gap": val["gap"], "accuracy": val["accuracy"],
            "probabilities": model.predict(x, verbose=0).tolist(), "labels": y.tolist()}


def main():
    devices = ["/cpu:0", "/cpu:1"]
    mirrored = tf.distribute.MirroredStrategy(devices)
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    x = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]], "float32")
    y = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], "float32")
    facts = {"replicas": mirrored.num_replicas_in_sync}
    ALL_REDUCES.clear()
    one_step(mirrored, x, y, 1.0)
    facts["all_reduces_per_replica"] = len(ALL_REDUCES) / mirrored.num_replicas_in_sync
    for clip in (0.0, 1.0):
        two, sums = one_step(mirrored, x, y, clip)
        one, _ = one_step(single, x, y, clip)
        facts[f"clip{clip}"] = {"two": two.tolist(), "one": one.tolist(),
                                "update_norm": float(np.linalg.norm(two)), "sums": sums}
    # Loss scaling and clipping together (the clip threshold scaled by the loss scale): the
    # same step as in float32, on two replicas and on one device.
    facts["mixed_clip"] = {name: one_step(strategy, x, y, 1.0, mixed=True)[0].tolist()
                           for name, strategy in (("two", mirrored), ("one", single))}
    # --xla compiles the forward and backward pass: the same step, one device and two.
    for name, strategy in (("xla_one", single), ("xla_two", mirrored)):
        weights, _ = one_step(strategy, x, y, 1.0, xla=True)
        facts[name] = weights.tolist()
    # Gradient centralization, on inputs whose kernel gradient has non-zero column means
    # (on x above they are zero): one device, two replicas, and two under loss scaling.
    skewed = x + np.array([[0.0, 1.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]], "float32")
    facts["gc"] = {"plain": one_step(single, skewed, y, 0.0)[0].tolist(),
                   "one": one_step(single, skewed, y, 0.0, gc=True)[0].tolist(),
                   "two": one_step(mirrored, skewed, y, 0.0, gc=True)[0].tolist(),
                   "two_mixed": one_step(mirrored, skewed, y, 0.0, mixed=True,
                                         gc=True)[0].tolist()}
    # --ema: three steps, the averages swapped in and out, on one device and two replicas,
    # and with loss scaling; and the plain run's weights after each step, to check against.
    facts["ema"] = {name: one_step(strategy, skewed, y, 0.0, lr=0.5, mixed=mixed, ema=0.5,
                                   steps=3)
                    for name, strategy, mixed in (("one", single, False), ("two", mirrored, False),
                                                  ("two_mixed", mirrored, True))}
    facts["ema"]["plain"] = [one_step(single, skewed, y, 0.0, lr=0.5, steps=n)[0].tolist()
                             for n in (1, 2, 3)]
    # Ranger: 7 steps, past its rectification and its first Lookahead sync (step 6), weight
    # decay on; one device, two replicas, and two under loss scaling.
    facts["ranger"] = {name: one_step(strategy, skewed, y, 0.0, lr=0.1, mixed=mixed, steps=7,
                                      ranger=True)[0].tolist()
                       for name, strategy, mixed in (("one", single, False),
                                                     ("two", mirrored, False),
                                                     ("two_mixed", mirrored, True))}
    # --backbone_lr_mult=0.1 under adamw with weight decay, 3 steps: one device, two replicas,
    # and two under loss scaling; and the plain run (a multiplier of 1), to differ from.
    facts["lr_mult"] = {name: one_step(strategy, skewed, y, 0.0, lr=0.1, mixed=mixed, steps=3,
                                       backbone_lr_mult=mult)
                        for name, strategy, mixed, mult in (
                            ("one", single, False, 0.1), ("two", mirrored, False, 0.1),
                            ("two_mixed", mirrored, True, 0.1), ("plain", single, False, 1.0))}
    # A frozen layer that unfreezes (--freeze_epochs, --unfreeze_every): one device, two
    # replicas, and two under loss scaling.
    facts["staged"] = {name: staged_steps(strategy, skewed, y, mixed)
                       for name, strategy, mixed in (("one", single, False),
                                                     ("two", mirrored, False),
                                                     ("two_mixed", mirrored, True))}
    facts["val_gap"] = {name: validation_gap(strategy)
                        for name, strategy in (("one", single), ("two", mirrored))}
    # An overflow on the second replica only: every replica must skip the step.
    bad = x.copy()
    bad[2:] = np.float32(3e38)
    weights, _ = one_step(mirrored, bad, y, 0.0, mixed=True)
    facts["overflow"] = {"finite": bool(np.isfinite(weights).all()),
                         "unchanged": bool((weights == 0).all())}
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
