"""Optimizers and learning-rate schedules (all from Keras 3), chosen by flag.

Schedules: plateau (a constant rate that ReduceLROnPlateau lowers when --monitor stalls, the
seeds' choice), cosine (linear warmup from 0, then cosine decay to 0), sgdr (the same warm-up,
then cosine with warm restarts: cycles of `restart_epochs`, each `restart_mult` times the one
before, the smoking/calling system's), step (multiply by `step_gamma` every `step_epochs`). Cosine and step run once per training phase (the head-only
warm-up, then the whole network: each its own warm-up and decay) and follow epoch progress,
not the optimizer's step count (PhasedSchedule), so a job resumed on another GPU count or
batch size goes on where the uninterrupted one would be. Optimizers: Keras' adam, sgd and
adamw, and Ranger (RAdam in Lookahead), written here. Gradient clipping is not set here:
under a multi-replica strategy Keras' clipnorm clips each replica's share, so loop.py clips
the all-reduced gradient itself.
"""
import keras
import numpy as np
import tensorflow as tf
from keras import ops

from errors import UserError

OPTIMIZERS = ("adam", "sgd", "adamw", "ranger")
SCHEDULES = ("plateau", "cosine", "sgdr", "step")


class WarmupThen(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `target` over `warmup` steps, then `after` counted from the
    warm-up's end (Keras' CosineDecayRestarts has no warm-up of its own). Branch-free."""

    def __init__(self, warmup, target, after):
        self.warmup, self.target, self.after = int(warmup), float(target), after

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        ramp = self.target * step / float(max(self.warmup, 1))
        later = tf.cast(self.after(tf.maximum(step - self.warmup, 0.0)), tf.float32)
        return tf.where(step < self.warmup, ramp, later)

    def get_config(self):
        return {"warmup": self.warmup, "target": self.target,
                "after": keras.optimizers.schedules.serialize(self.after)}


def make_schedule(name, learning_rate, steps_per_epoch, epochs, warmup_epochs=0.0,
                  step_epochs=10, step_gamma=0.1, restart_epochs=5.0, restart_mult=2.0):
    """A float (plateau) or a keras LearningRateSchedule over optimizer steps."""
    if name == "plateau":
        return float(learning_rate)
    total = max(1, steps_per_epoch * epochs)
    if name == "sgdr":
        if restart_epochs <= 0 or restart_mult < 1:
            raise UserError(f"--restart_epochs={restart_epochs} --restart_mult={restart_mult}: "
                            "use a cycle of more than 0 epochs and a factor of 1 or more")
        warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
        cycles = keras.optimizers.schedules.CosineDecayRestarts(
            learning_rate, max(1, int(restart_epochs * steps_per_epoch)), t_mul=restart_mult,
            m_mul=1.0, alpha=0.0)
        return WarmupThen(warmup, learning_rate, cycles) if warmup > 0 else cycles
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
    raise UserError(f"--lr_schedule={name!r}: use one of {', '.join(SCHEDULES)}")


class PhasedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate by epoch progress: at optimizer step `step`, the phase's schedule at
    (epochs into the phase) x (steps per epoch now) + (steps into this epoch).

    `start_epoch` records the epoch and the step it began at, before each epoch. The optimizer's
    step count therefore never shifts the rate: a job resumed with another global batch follows
    the uninterrupted job's curve, and the count can restart at the unfreeze."""

    def __init__(self, phases, steps_per_epoch):
        """phases: [(first epoch, end epoch, schedule or rate over that phase's steps)]."""
        self.phases = [(first, end, _constant(rate) if isinstance(rate, float) else rate)
                       for first, end, rate in phases]
        self.steps_per_epoch = int(steps_per_epoch)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="schedule_epoch")
        self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="schedule_step")

    def start_epoch(self, epoch, step):
        """Epoch `epoch` (0-based) begins now, at optimizer step `step`."""
        self.epoch.assign(int(epoch))
        self.epoch_step.assign(int(step))

    def __call__(self, step):
        into_epoch = tf.cast(step, tf.int64) - self.epoch_step
        rate = tf.constant(0.0)
        for first, end, schedule in self.phases:  # branch-free: no cond near the update
            local = tf.maximum((self.epoch - first) * self.steps_per_epoch + into_epoch, 0)
            inside = tf.logical_and(self.epoch >= first, self.epoch < end)
            rate = tf.where(inside, tf.cast(schedule(local), tf.float32), rate)
        return rate

    def get_config(self):
        return {"phases": [(first, end, keras.optimizers.schedules.serialize(schedule))
                           for first, end, schedule in self.phases],
                "steps_per_epoch": self.steps_per_epoch}


def _constant(rate):
    return keras.optimizers.schedules.PiecewiseConstantDecay([1], [rate, rate])


def phased_schedule(name, learning_rate, steps_per_epoch, phases, warmup_epochs=0.0,
                    step_epochs=10, step_gamma=0.1, restart_epochs=5.0, restart_mult=2.0):
    """The run's rate: a float for plateau (ReduceLROnPlateau moves it), else a PhasedSchedule
    over `phases` [(first epoch, end epoch)], each phase its own make_schedule."""
    if name == "plateau":
        return float(learning_rate)
    return PhasedSchedule([(first, end, make_schedule(name, learning_rate, steps_per_epoch,
                                                      end - first, warmup_epochs, step_epochs,
                                                      step_gamma, restart_epochs, restart_mult))
                           for first, end in phases], steps_per_epoch)


def reset_state(optimizer):
    """Make the optimizer a fresh one: moments at zero and the step count at 0 (so Adam's bias
    correction starts again; Ranger takes its slow weights from the weights again at step 0);
    the learning rate and a loss scale are kept."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    for variable in inner.variables:
        if variable.path.split("/")[-1] not in ("iteration", "iterations", "learning_rate"):
            variable.assign(tf.zeros(variable.shape, variable.dtype))
    inner.iterations.assign(0)


# Decoupled weight decay (Keras' form, w -= lr x wd x w) when --weight_decay is left unset:
# Adam as before (none), AdamW and SGD at the values their papers' recipes use, Ranger none
# (its own default). (AdamW's old default here, 1e-4, moved a weight by 1e-7 a step at lr
# 1e-3: nothing.)
DEFAULT_WEIGHT_DECAY = {"adam": 0.0, "adamw": 0.05, "sgd": 5e-4, "ranger": 0.0}
NOT_DECAYED = ["bias", "gamma", "beta", "gem_p"]  # biases, BatchNorm's scale and offset, GeM's p


def weight_decay_for(name, weight_decay=None):
    """--weight_decay, or the optimizer's default when it is unset (None)."""
    if name not in OPTIMIZERS:
        raise UserError(f"--optimizer={name!r}: use one of {', '.join(OPTIMIZERS)}")
    value = DEFAULT_WEIGHT_DECAY[name] if weight_decay is None else float(weight_decay)
    if value < 0:
        raise UserError(f"--weight_decay={weight_decay}: use 0 or a positive number")
    return value


class Ranger(keras.optimizers.Optimizer):
    """RAdam's rectified Adam step (Liu et al. 2019) inside Lookahead (Zhang et al. 2019), as in
    Less Wright's Ranger and with its defaults: Keras 3 has neither (KERAS3-NOTES 8).

    Until rho_t exceeds `rectify_threshold` (5, as RAdam's and Ranger's code; the paper says 4)
    the step is bias-corrected momentum alone. Every `sync_period` steps the slow weights move
    `slow_step` of the way to the weights and the weights become them, so at a cycle's first
    step (step 0 too, and after reset_state) the slow weights are taken from the weights. Both
    switches are 0/1 blends, no cond: tf.distribute allows none near the update (KERAS3-NOTES
    5). Weight decay (w -= lr x wd x w) comes after the slow weights are taken, as in Ranger."""

    def __init__(self, learning_rate=1e-3, beta_1=0.95, beta_2=0.999, epsilon=1e-5,
                 sync_period=6, slow_step=0.5, rectify_threshold=5.0, name="ranger", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if int(sync_period) < 1 or not 0.0 < slow_step <= 1.0:
            raise ValueError(f"Ranger: sync_period {sync_period} must be >= 1 and slow_step "
                             f"{slow_step} in (0, 1]")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.sync_period, self.slow_step = int(sync_period), slow_step
        self.rectify_threshold = rectify_threshold

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities, self._slow = self.add_optimizer_variables(
            var_list, ["momentum", "velocity", "slow"])

    decays_in_update_step = True  # with the rate update_step is handed (scale_learning_rates)

    def _apply_weight_decay(self, variables):
        """Nothing before the step: update_step decays each weight after taking the slow ones."""

    def _step_sizes(self):
        """(rectified, size of Adam's step, size of the momentum step) at this step: scalars,
        in float64: rho_t is a difference of two numbers near 2 / (1 - beta_2), ~2000."""
        t = tf.cast(self.iterations + 1, tf.float64)
        beta_1, beta_2 = (tf.constant(b, tf.float64) for b in (self.beta_1, self.beta_2))
        beta_2_power = tf.pow(beta_2, t)
        rho_inf = 2.0 / (1.0 - beta_2) - 1.0
        rho = rho_inf - 2.0 * t * beta_2_power / (1.0 - beta_2_power)
        rectification = (rho - 4.0) * (rho - 2.0) * rho_inf / (
            (rho_inf - 4.0) * (rho_inf - 2.0) * rho)  # r_t squared; below 0 for 2 < rho_t < 4
        # r_t x sqrt(1 - beta_2^t) (the second moment's bias correction); unused below the
        # threshold, where it may not exist.
        adaptive = tf.sqrt(tf.maximum(rectification * (1.0 - beta_2_power), 0.0))
        bias_1 = 1.0 - tf.pow(beta_1, t)
        return rho > self.rectify_threshold, adaptive / bias_1, 1.0 / bias_1

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        m, v, slow = self._momentums[index], self._velocities[index], self._slow[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        rectified, adaptive, plain = self._step_sizes()
        step = ops.where(rectified, ops.cast(adaptive, dtype) * m / (ops.sqrt(v) + self.epsilon),
                         ops.cast(plain, dtype) * m)

        cycle = ops.mod(ops.cast(self.iterations, "int64"), self.sync_period)
        weights = ops.convert_to_tensor(variable)
        start = ops.where(ops.equal(cycle, 0), weights, slow)  # the slow weights: the cycle's start
        if self.weight_decay is not None and self._use_weight_decay(variable):
            weights = weights - weights * ops.cast(self.weight_decay, dtype) * lr
        fast = weights - lr * step
        synced = start + ops.cast(self.slow_step, dtype) * (fast - start)
        sync = ops.equal(cycle, self.sync_period - 1)
        self.assign(slow, ops.where(sync, synced, start))
        self.assign(variable, ops.where(sync, synced, fast))

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "sync_period": self.sync_period, "slow_step": self.slow_step,
                       "rectify_threshold": self.rectify_threshold})
        return config


def make_optimizer(name, schedule, weight_decay=None, momentum=0.9, ema=0.0):
    """The optimizer, with decoupled weight decay on every weight but biases and BatchNorm's
    (`weight_decay_for`) and, when `ema` > 0, Keras' moving average of the trainable weights
    (average = ema x average + (1 - ema) x weight after each step); unbuilt, so a
    LossScaleOptimizer can wrap it."""
    decay = weight_decay_for(name, weight_decay) or None
    if not 0.0 <= ema < 1.0:
        raise UserError(f"--ema={ema}: use 0 (off) or a momentum below 1, e.g. 0.99")
    averaging = {"use_ema": ema > 0, "ema_momentum": ema or 0.99}
    if name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=schedule, weight_decay=decay,
                                          **averaging)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=momentum,
                                         nesterov=True, weight_decay=decay, **averaging)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=decay or 0.0,
                                           **averaging)
    else:
        optimizer = Ranger(learning_rate=schedule, weight_decay=decay, **averaging)
    if decay:
        optimizer.exclude_from_weight_decay(var_names=NOT_DECAYED)
    return optimizer


def scale_learning_rates(optimizer, variables, multiplier):
    """Train `variables` (the backbone's: --backbone_lr_mult) at `multiplier` times the
    learning rate, their decoupled weight decay alike, the rest at the rate itself. Keras 3 has
    no per-weight rates; every optimizer here takes a step linear in the rate update_step is
    handed for each weight (SGD's momentum accumulates rate x gradient), so handing it the
    scaled rate is that weight's own optimizer at the lower rate. Call after optimizer.build."""
    if multiplier <= 0:
        raise UserError(f"--backbone_lr_mult={multiplier}: use a rate multiplier above 0 "
                        f"(to hold the backbone fixed, use --freeze_epochs)")
    if multiplier == 1.0:
        return
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    factors = [1.0] * len(inner._trainable_variables)
    for variable in variables:
        factors[inner._get_variable_index(variable)] = float(multiplier)

    def factor(variable):
        return factors[inner._get_variable_index(variable)]

    update_step, apply_weight_decay = inner.update_step, inner._apply_weight_decay
    decays_itself = getattr(inner, "decays_in_update_step", False)  # Ranger: with its rate

    def scaled_update_step(gradient, variable, learning_rate):
        scale = factor(variable)
        rate = learning_rate * scale
        if (scale != 1.0 and not decays_itself and inner.weight_decay
                and inner._use_weight_decay(variable)):
            # Keras' decay, w -= lr x wd x w, before the step as Keras has it, at this
            # weight's rate: here, inside the distributed update, not in the merge Keras'
            # own decay runs in (its rate is the optimizer's, and replicas share it).
            variable.assign_sub(variable * ops.cast(inner.weight_decay, variable.dtype)
                                * ops.cast(rate, variable.dtype))
        return update_step(gradient, variable, rate)

    def scaled_weight_decay(variables):
        apply_weight_decay([v for v in variables if factor(v) == 1.0])

    inner.update_step, inner._apply_weight_decay = scaled_update_step, scaled_weight_decay


STATS_BATCHES = 10  # training batches BatchNorm's statistics are recomputed over (--ema)


class AveragedWeights:
    """The optimizer's moving average of the weights (--ema) put in the model's place, and
    the trained weights put back: `swap_in()` before validation and the best-weights file,
    `swap_out()` before training (and the checkpoint) goes on. A no-op without --ema.

    BatchNorm's moving statistics were gathered for the trained weights, not the averaged
    ones, and from random weights the two differ enough to ruin validation (on the photo set
    held-out top-1 fell from 0.50 to 0.23). So with `batches` (a callable giving training
    image batches, unaugmented) swap_in recomputes them for the averages, as the plain mean
    over those batches (precise BatchNorm), and swap_out puts the trained ones back."""

    def __init__(self, optimizer, model=None, batches=None):
        self.inner = getattr(optimizer, "inner_optimizer", optimizer)
        self.on = bool(getattr(self.inner, "use_ema", False))
        self.model, self.batches = model, batches
        self._trained = self._statistics = None

    def _norms(self):
        """The BatchNorm layers that train now (a frozen backbone's keep their statistics)."""
        if self.model is None or self.batches is None:
            return []
        return [layer for layer in self.model._flatten_layers()
                if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]

    def swap_in(self):
        if not self.on:
            return
        variables = self.inner._trainable_variables  # those the averages were built for
        self._trained = [np.array(v.numpy()) for v in variables]
        # Keras' own overwrite: it assigns on every replica under a distribution strategy.
        self.inner._overwrite_model_variables_with_average_value(variables)
        norms = self._norms()
        self._statistics = [(layer, np.array(layer.moving_mean.numpy()),
                             np.array(layer.moving_variance.numpy())) for layer in norms]
        if norms:
            recompute_statistics(self.model, norms, self.batches())

    def swap_out(self):
        if not self.on or self._trained is None:
            return
        for variable, value in zip(self.inner._trainable_variables, self._trained):
            variable.assign(value)  # cross-replica: every replica gets it
        for layer, mean, variance in self._statistics or []:
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        self._trained = self._statistics = None


def recompute_statistics(model, norms, batches):
    """Set the moving mean and variance of the BatchNorm layers `norms` to the mean of their
    batch statistics over `batches`: momentum (k - 1) / k at the k-th batch makes Keras'
    moving update (m x old + (1 - m) x batch) a running mean."""
    momenta = [layer.momentum for layer in norms]
    try:
        for k, images in enumerate(batches, start=1):
            for layer in norms:
                layer.momentum = (k - 1) / k
            model(images, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def current_learning_rate(optimizer):
    rate = optimizer.learning_rate
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)
