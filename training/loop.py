"""The one training loop, for one device, several GPUs and several nodes alike.

Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), and a
second code path for clusters would drift, so every job runs this: `strategy.run` inside a
tf.function, per-replica datasets, `compute_average_loss`, loss scaling under mixed precision.
Gradients are all-reduced once, in the step, then clipped, then applied: Keras' clipnorm would
clip each replica's share, and LossScaleOptimizer would judge finiteness from replica 0 alone
(both measured with two replicas: tests/test_distributed.py). Keras' own all-reduce inside
`apply_gradients` is switched off for the loop's optimizer (single_all_reduce), so the step
sends the gradients over the wire once, not twice. Losses and accuracies are
reported from sums, where Keras' own per-replica loss scaling does not apply. Keras' own callbacks (ReduceLROnPlateau, EarlyStopping, CSVLogger,
...) are driven through keras.callbacks.CallbackList.
"""
import logging
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from models import gap

from .optim import AveragedWeights, current_learning_rate

log = logging.getLogger("training")


@dataclass
class StepConfig:
    global_batch: int
    clipnorm: float = 0.0           # clip the global gradient norm (0: off)
    class_weights: object = None    # per-class loss weights (balance=class_weight), or None
    jit_compile: bool = False
    steps_per_execution: int = 1    # training steps per compiled call (fewer host round trips)
    grad_centralization: bool = False  # centralize kernels' gradients (--grad_centralization)
    level_loss: object = None       # the auxiliary level heads' loss (models.losses.level_loss)


def _split(outputs):
    """(the classes' output, [the level heads' outputs]) of the training model's outputs."""
    if isinstance(outputs, (list, tuple)):
        return outputs[0], list(outputs[1:])
    return outputs, []


def centralize(gradient):
    """Gradient centralization (Yong et al., 2020): a kernel's gradient minus its mean over
    every axis but the last (Keras' output channels); biases, BatchNorm's weights and other
    vectors pass as they are. Linear, so the same before or after the all-reduce."""
    if gradient is None or len(gradient.shape) < 2:
        return gradient
    axes = list(range(len(gradient.shape) - 1))
    return gradient - tf.reduce_mean(gradient, axis=axes, keepdims=True)


def _sums(probabilities, labels, per_example):
    """Sums over the batch: loss, top-1 hits, top-5 hits, images; then per class, hits and
    images (for the macro recall: accuracy alone hides a minority class nobody predicts)."""
    true = tf.argmax(labels, axis=-1)
    hits = tf.cast(tf.equal(tf.argmax(probabilities, -1), true), tf.float32)
    # top_k ranks ties by the lower index, as metrics.json's stable sort does (in_top_k
    # would count every tied class as in the top 5).
    k = tf.minimum(5, tf.shape(probabilities)[-1])
    _, best = tf.math.top_k(tf.cast(probabilities, tf.float32), k)
    top5 = tf.reduce_sum(tf.cast(tf.reduce_any(
        tf.equal(tf.cast(best, tf.int64), true[:, tf.newaxis]), axis=-1), tf.float32))
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    hard = tf.one_hot(true, tf.shape(labels)[-1], dtype=tf.float32)
    return (tf.reduce_sum(per_example), tf.reduce_sum(hits), top5, count,
            tf.reduce_sum(hard * hits[:, tf.newaxis], axis=0), tf.reduce_sum(hard, axis=0))


def single_all_reduce(optimizer):
    """Stop Keras summing the gradients across replicas again inside apply_gradients (its TF
    optimizer does so whenever it runs in a replica context); the loop has summed them
    already, as it must to clip and check them whole. Keras 3 has no switch for this (Keras 2's
    experimental_aggregate_gradients is gone), so the one method that does it is replaced on
    this optimizer object. Returns False where this Keras has no such method: the loop then
    divides by the replica count before Keras' sum, as it used to (two all-reduces)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not callable(getattr(type(inner), "_all_reduce_sum_gradients", None)):
        return False
    inner._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)
    return True


class Loop:
    """Compiled train and eval steps for one model, optimizer and strategy."""

    def __init__(self, strategy, model, optimizer, loss_fn, config):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn                    # reduction=None: per-example losses
        self.config = config
        self.mixed = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.keras_sums = strategy.num_replicas_in_sync > 1 and not single_all_reduce(optimizer)
        self._train_fn = None
        self._steps_fn = None
        self._eval_fn = None
        self._sync_fn = None
        self._grads_fn = None

    def _forward_backward(self, images, labels):
        """Loss and gradients of one replica's batch: the part XLA compiles (--xla). The
        iterator read, the all-reduce and the optimizer update stay outside it: XLA cannot
        compile IteratorGetNext, and the collectives belong to the strategy."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probabilities, levels = _split(self.model(images, training=True))
            per_example = self.loss_fn(labels, probabilities)
            if levels:  # --level_weights: the auxiliary heads' crossentropies beside it
                per_example += self.config.level_loss(labels, levels)
            if self.config.class_weights is not None:
                weights = tf.constant(self.config.class_weights, tf.float32)
                per_example *= tf.reduce_sum(labels * weights, axis=-1)
            loss = tf.nn.compute_average_loss(per_example,
                                              global_batch_size=self.config.global_batch)
            scaled = self.optimizer.scale_loss(loss) if self.mixed else loss
        return tape.gradient(scaled, variables), _sums(probabilities, labels, per_example)

    def _replica_train_step(self, images, labels):
        grads, sums = self._grads_fn(images, labels)
        variables = self.model.trainable_variables
        replicas = self.strategy.num_replicas_in_sync
        if replicas > 1:
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads)
        if self.config.grad_centralization:
            grads = [centralize(g) for g in grads]
        if self.config.clipnorm:
            scale = tf.cast(self.optimizer.dynamic_scale, tf.float32) if self.mixed else 1.0
            grads, _ = tf.clip_by_global_norm(grads, self.config.clipnorm * scale)
        if self.keras_sums:
            grads = [g / replicas for g in grads]  # apply_gradients sums the replicas again
        self.optimizer.apply_gradients(zip(grads, variables))
        return sums

    def _replica_eval_step(self, images, labels):
        """The sums, and each image's top-class confidence and whether it is right (GAP
        ranks every image of the set, so these are gathered, not summed)."""
        probabilities, _ = _split(self.model(images, training=False))
        confidence = tf.reduce_max(tf.cast(probabilities, tf.float32), axis=-1)
        right = tf.cast(tf.equal(tf.argmax(probabilities, -1), tf.argmax(labels, -1)),
                        tf.float32)
        return (_sums(probabilities, labels, self.loss_fn(labels, probabilities)), confidence,
                right)

    def _reduced(self, per_replica):
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for v in per_replica]

    def sync_statistics(self):
        """Average the non-trainable float weights (BatchNorm's moving statistics) over all
        replicas. Each replica updates them from its own batches, so without this every
        worker ends with its own values, and the chief's checkpoint holds one replica's
        view. (PyTorch's DDP broadcasts such buffers for the same reason.)"""
        if self.strategy.num_replicas_in_sync < 2:
            return
        if self._sync_fn is None:
            variables = [v for v in self.model.non_trainable_variables
                         if v.dtype in ("float32", "float16", "bfloat16")]

            @tf.function
            def fn():
                def replica_mean():
                    return tf.distribute.get_replica_context().all_reduce(
                        tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables])
                means = self.strategy.run(replica_mean)
                for variable, mean in zip(variables, means):
                    variable.assign(self.strategy.experimental_local_results(mean)[0])
            self._sync_fn = fn
        self._sync_fn()

    def retrace(self):
        """Forget the compiled steps (the set of trainable variables changed)."""
        self._train_fn = None
        self._steps_fn = None
        self._eval_fn = None
        self._sync_fn = None
        self._grads_fn = None

    def _compile_grads(self):
        if self._grads_fn is None:
            self._grads_fn = (tf.function(self._forward_backward, jit_compile=True)
                              if self.config.jit_compile else self._forward_backward)

    def _one_step(self, iterator):
        images, labels = next(iterator)
        return self._reduced(self.strategy.run(self._replica_train_step, args=(images, labels)))

    def train_step(self, iterator):
        """One step -> its sums (loss, top-1 hits, top-5 hits, images, per class ...)."""
        if self._train_fn is None:
            self._compile_grads()
            self._train_fn = tf.function(self._one_step)
        return self._train_fn(iterator)

    def train_steps(self, iterator, steps):
        """`steps` steps in one compiled call (Keras' steps_per_execution) -> the summed
        [loss, top-1 hits, top-5 hits, images], a tensor left on the device: the caller reads
        it when it logs, so the host does not wait on every step."""
        if self._steps_fn is None:
            self._compile_grads()

            @tf.function
            def fn(it, count):
                totals = tf.zeros([4], tf.float32)
                for _ in tf.range(count):
                    totals += tf.stack(self._one_step(it)[:4])
                return totals
            self._steps_fn = fn
        return self._steps_fn(iterator, tf.constant(steps, tf.int32))

    def eval_step(self, batch):
        if self._eval_fn is None:
            @tf.function
            def fn(images, labels):
                sums, confidence, right = self.strategy.run(self._replica_eval_step,
                                                            args=(images, labels))
                return (self._reduced(sums), self.strategy.gather(confidence, axis=0),
                        self.strategy.gather(right, axis=0))
            self._eval_fn = fn
        return self._eval_fn(*batch)

    def evaluate(self, dist_dataset):
        """{loss, accuracy, top5, macro_recall, gap} over a finite distributed dataset."""
        totals, class_hits, class_counts = np.zeros(4), 0.0, 0.0
        confidences, rights = [], []
        for batch in dist_dataset:
            sums, confidence, right = self.eval_step(batch)
            confidences.append(confidence.numpy())
            rights.append(right.numpy() > 0.5)
            totals += [float(v) for v in sums[:4]]
            class_hits = class_hits + sums[4].numpy()
            class_counts = class_counts + sums[5].numpy()
        count = max(totals[3], 1.0)
        present = np.asarray(class_counts) > 0
        recall = float(np.mean(np.asarray(class_hits)[present] / np.asarray(class_counts)[present])) \
            if present.any() else 0.0
        return {"loss": totals[0] / count, "accuracy": totals[1] / count,
                "top5": totals[2] / count, "macro_recall": recall,
                "gap": gap.global_average_precision(np.concatenate(confidences or [[]]),
                                                    np.concatenate(rights or [[]]))}


READ_EVERY = 20  # steps between the host's reads of the running sums (each read waits)


def run_steps(loop, iterator, steps, on_read=None):
    """Train `steps` steps, --steps_per_execution to a compiled call, reading the sums back
    every READ_EVERY steps (and at the end) rather than after each: the host queues the next
    calls while the device works. Returns [loss, top-1 hits, top-5 hits, images] summed;
    `on_read(steps since the last read, totals so far)` after each read."""
    totals = np.zeros(4)
    per_call = max(1, loop.config.steps_per_execution)
    done, pending, unread = 0, [], 0
    while done < steps:
        count = min(per_call, steps - done)
        pending.append(loop.train_steps(iterator, count))  # runs on; not read yet
        done, unread = done + count, unread + count
        if unread >= READ_EVERY or done == steps:
            totals += np.sum([sums.numpy() for sums in pending], axis=0)
            if on_read is not None:
                on_read(unread, totals)
            pending, unread = [], 0
    return totals


def progress_bar(total, epoch, epochs):
    """On a terminal a live bar, replaced by the epoch's summary line; in a log file (ModelArts)
    a line every 30 s, kept."""
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step", file=sys.stderr,
                mininterval=0.5 if tty else 30, leave=not tty)


def duration(seconds):
    """45s, 3m12s, 1h05m: how long, as a person reads it."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def run_epochs(loop, train_iter, val_dist, steps_per_epoch, start_epoch, epochs, callbacks,
               on_epoch_saved=None, phase_for_epoch=None, on_train_begin=None, averaged=None,
               within=None, save_steps=0, on_steps_saved=None):
    """Train epochs start_epoch..epochs-1; callbacks see Keras-named logs (val_accuracy...).

    `phase_for_epoch(epoch)` may change what trains (returns True when it did, so the steps are
    compiled again); `on_epoch_saved(epoch, logs)` runs after the callbacks, for checkpoints;
    `on_train_begin()` after the callbacks' own (which reset their state), to restore it;
    `averaged` (optim.AveragedWeights, --ema) is swapped in for validation and the callbacks.
    `within` ((steps done, their sums): a resume within start_epoch) starts that epoch there;
    every `save_steps` steps of an epoch but its last, `on_steps_saved(epoch, steps done,
    sums so far)`."""
    history, began = [], time.time()
    averaged = averaged or AveragedWeights(loop.optimizer)
    callbacks.on_train_begin()
    if on_train_begin is not None:
        on_train_begin()
    for epoch in range(start_epoch, epochs):
        if phase_for_epoch is not None and phase_for_epoch(epoch):
            loop.retrace()
        callbacks.on_epoch_begin(epoch)
        started = time.time()
        done, totals = (within[0], np.asarray(within[1], float)) if (
            within and epoch == start_epoch) else (0, np.zeros(4))
        images_before = totals[3]  # trained before a resume within this epoch
        with progress_bar(steps_per_epoch, epoch, epochs) as bar:
            bar.update(done)
            while done < steps_per_epoch:
                chunk = steps_per_epoch - done
                if save_steps:
                    chunk = min(chunk, save_steps - done % save_steps)

                def show(steps, sums, before=totals):
                    bar.update(steps)
                    sums = before + sums
                    bar.set_postfix(loss=f"{sums[0] / sums[3]:.4f}",
                                    acc=f"{sums[1] / sums[3]:.3f}", refresh=False)
                totals = totals + run_steps(loop, train_iter, chunk, show)
                done += chunk
                if save_steps and done < steps_per_epoch and on_steps_saved is not None:
                    on_steps_saved(epoch, done, totals)
        loop.sync_statistics()
        averaged.swap_in()  # --ema: validation and the best weights see the averages
        val = loop.evaluate(val_dist)
        logs = {"loss": totals[0] / totals[3], "accuracy": totals[1] / totals[3],
                "top5_accuracy": totals[2] / totals[3], "val_loss": val["loss"],
                "val_accuracy": val["accuracy"], "val_top5_accuracy": val["top5"],
                "val_macro_recall": val["macro_recall"], "val_gap": val["gap"],
                "learning_rate": current_learning_rate(loop.optimizer),
                "seconds": time.time() - started}
        elapsed = time.time() - began  # the epochs of this run (a resumed one: since then)
        left = elapsed / (epoch + 1 - start_epoch) * (epochs - epoch - 1)
        log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  val_top5 %.4f"
                 "  val_macro_recall %.4f  val_gap %.4f  lr %.2e  %.0fs  (%.1f img/s)  "
                 "elapsed %s, %s",
                 epoch + 1, epochs, logs["loss"], logs["accuracy"], logs["val_loss"],
                 logs["val_accuracy"], logs["val_top5_accuracy"], logs["val_macro_recall"],
                 logs["val_gap"],
                 logs["learning_rate"], logs["seconds"],
                 (totals[3] - images_before) / max(logs["seconds"], 1e-9),
                 duration(elapsed), f"about {duration(left)} left" if left else "done")
        callbacks.on_epoch_end(epoch, logs)
        averaged.swap_out()  # training, and the checkpoint, hold the trained weights
        history.append({"epoch": epoch + 1, **logs})
        if on_epoch_saved is not None:
            on_epoch_saved(epoch, logs)
        # EarlyStopping stops the model the callbacks hold: the classifier, which for a
        # cosine head is not the model the loop trains (its cosines).
        if getattr(callbacks.model, "stop_training", False):
            log.info("early stopping after epoch %d: %s stopped improving", epoch + 1,
                     next((c.monitor for c in callbacks.callbacks
                           if isinstance(c, keras.callbacks.EarlyStopping)), "val_accuracy"))
            break
    callbacks.on_train_end()
    return history
