"""The training stage of a job: strategy, model, weights, optimizer, resume, callbacks, phases,
then the loop. Takes the prepared data and the parsed flags; returns the trained weights, the
per-epoch history and the best weights file (Result); final_model builds what is evaluated and
exported from them. Each part takes its piece of the typed config (config.py), never the flags."""
import functools
import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

import obs_utils
from inputs import balance, label_map, oof, pipeline, screening
from models import build, init_from, losses, run_weights, weights

from . import checkpoints, optim, phases
from .loop import Loop, StepConfig, run_epochs

log = logging.getLogger("training")


def _auto(flag, gpu):
    return gpu if flag == "auto" else flag == "true"


def _datasets(strategy, data, feed, seed, skip_batches=0):
    """Per-replica datasets (feed: config.FeedConfig): each input pipeline draws its own
    stream (seed + pipeline id), from its `skip_batches`-th batch."""
    num_classes = len(data.class_names)
    targets = (oof.targets(data.train, data.soft, feed.distill_weight, num_classes)
               if data.soft is not None else None)

    def train_fn(context):
        return pipeline.train_dataset(
            data.train, num_classes, feed.batch_size, feed.input_size, feed.resize_mode,
            feed.balance, feed.augmentation, seed + 7919 * context.input_pipeline_id,
            feed.cache_images, feed.deterministic, feed.sampler, feed.pk_images, targets,
            skip_batches)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    val = pipeline.eval_dataset(data.val, num_classes,
                                feed.batch_size * strategy.num_replicas_in_sync,
                                feed.input_size, feed.resize_mode,
                                cache=feed.cache_images).with_options(options)
    return (iter(strategy.distribute_datasets_from_function(train_fn)),
            strategy.experimental_distribute_dataset(val))


def train(run, data, work_dir, strategy, chief=True, pretrained=None):
    """Train as `run` (config.RunConfig: its feed, model and fit parts, and train_url) says,
    on `data` (inputs.prepare.PreparedData) under `strategy` (made at program start, as
    MultiWorkerMirroredStrategy requires), from `pretrained` (models.weights.prepare's Match,
    checked before the data was touched) or random weights; outputs under work_dir and
    train_url."""
    feed, fit, train_url = run.feed, run.fit, run.train_url
    gpu = bool(tf.config.list_physical_devices("GPU"))
    mixed, xla = _auto(fit.mixed_precision, gpu), _auto(fit.xla, gpu)
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    replicas = strategy.num_replicas_in_sync
    global_batch = feed.batch_size * replicas
    steps = pipeline.steps_per_epoch(len(data.train), global_batch)
    num_classes = len(data.class_names)
    log.info("training %s on %d classes: %d train / %d val images, batch %d x %d replicas, "
             "%d steps per epoch, mixed precision %s, XLA %s", run.model.backbone, num_classes,
             len(data.train), len(data.val), feed.batch_size, replicas, steps,
             "on" if mixed else "off", "on" if xla else "off")
    keras.utils.set_random_seed(fit.seed)  # --seed: the same first weights, as the same data
    levels = label_map.levels(data.class_names, run.data.label_levels_sep) if (
        fit.level_weights) else []
    with strategy.scope():
        parts = _build(run.model, fit, num_classes, steps, mixed, pretrained,
                       [len(level.names) for level in levels])
    model, optimizer = parts.model, parts.optimizer

    state = checkpoints.ResumeState(model, optimizer, work_dir, train_url, chief,
                                    extra=parts.level_heads)
    start_epoch = state.restore()
    step_state = checkpoints.StepState(model, optimizer, work_dir, train_url, chief,
                                       extra=parts.level_heads)
    within = step_state.restore(start_epoch, global_batch, steps)
    sync = RemoteSync(train_url, work_dir, chief)
    sync.pull_earlier(resumed=start_epoch > 0)
    best = checkpoints.BestWeights(os.path.join(work_dir, "weights"), sync.weights_url,
                                   fit.keep_weights_file_num, chief,
                                   earlier_run=start_epoch == 0, monitor=fit.monitor)
    if checkpoints.finished(start_epoch, fit.max_epochs, state.saved_state(start_epoch)):
        log.info("training had already finished in %s, after %d epochs", train_url,
                 start_epoch)
        return Result(_host_weights(model), [], best.best(), sync.csv_log)

    counts = screening.class_counts(data.train, num_classes)
    config = StepConfig(global_batch, fit.clipnorm,
                        balance.loss_weights(counts, feed.balance), xla,
                        fit.steps_per_execution, fit.grad_centralization,
                        losses.level_loss(levels, fit.level_weights) if levels else None)
    loop = Loop(strategy, parts.training_model, optimizer, parts.loss_fn, config)
    # The data stream of the first epoch this process trains (a resume within an epoch:
    # the stream it was drawn from, past the batches already trained on).
    stream_epoch, skipped = (within.stream_epoch, within.stream_steps) if within else (
        start_epoch, 0)
    train_iter, val_dist = _datasets(strategy, data, feed, fit.seed + 1000 * stream_epoch,
                                     skipped)
    callback_list = _callbacks(fit, best, sync, start_epoch)
    callbacks = keras.callbacks.CallbackList(callback_list, model=model,
                                             epochs=fit.max_epochs, steps=steps)

    def phase_for_epoch(epoch):
        return phases.begin_epoch(epoch, start_epoch, parts.phases, parts.stages, parts.backbone,
                                  model, optimizer, parts.schedule,
                                  within.steps_done if within else 0)

    first_step = within.steps_done if within else 0

    def after_steps(epoch, steps_done, totals):  # --save_steps
        drawn = skipped + (epoch - start_epoch) * steps + steps_done - first_step
        step_state.save(checkpoints.Position(epoch, steps_done, [float(t) for t in totals],
                                             stream_epoch, drawn, global_batch))

    def after_epoch(epoch, _logs):
        state.save(epoch + 1, callback_list,
                   stopped_early=bool(getattr(model, "stop_training", False)))
        sync.push_logs()

    # Decoded once, on the first swap (--ema only), and reused every epoch: they never change.
    statistics_batches = functools.lru_cache(maxsize=1)(lambda: _statistics_batches(data, feed))
    averaged = optim.AveragedWeights(optimizer, model, statistics_batches)
    history = run_epochs(loop, train_iter, val_dist, steps, start_epoch, fit.max_epochs,
                         callbacks, after_epoch, phase_for_epoch,
                         lambda: state.restore_callbacks(callback_list, start_epoch), averaged,
                         within and (within.steps_done, within.totals), fit.save_steps,
                         after_steps)
    averaged.swap_in()  # --ema: the averages (their BatchNorm statistics too) are the result
    final_weights = _host_weights(model)
    log.info("weights fingerprint %s (equal on every worker of a multi-node job)",
             fingerprint(final_weights))
    return Result(final_weights, history, best.best(), sync.csv_log)


def _statistics_batches(data, feed):
    """Training images as evaluation sees them (no augmentation), optim.STATS_BATCHES batches
    (a list of image tensors), for BatchNorm's statistics under --ema."""
    count = min(len(data.train), optim.STATS_BATCHES * feed.batch_size)
    spread = data.train[::max(1, len(data.train) // count)][:count]  # every class, not the first
    dataset = pipeline.eval_dataset(spread, len(data.class_names),
                                    feed.batch_size, feed.input_size, feed.resize_mode)
    return [images for images, _ in dataset]


@dataclass
class Parts:
    """What _build makes under the strategy's scope."""
    model: object
    backbone: object
    optimizer: object
    loss_fn: object
    schedule: object
    phases: list      # [phases.Phase]
    stages: list      # build.backbone_stages
    training_model: object  # what the loop runs: build.training_outputs, and the level heads
    level_heads: list       # --level_weights: the auxiliary heads' layers


def _build(spec, fit, num_classes, steps, mixed, pretrained, level_sizes=()):
    """The classifier of `spec` (config.ModelConfig: pretrained backbone, or random weights
    said loudly), its BatchNorm momentum for short runs, and from `fit` (config.FitConfig)
    the phased schedule, the optimizer and the loss; `level_sizes`: an auxiliary head per
    coarser level, of that many classes, in the training model only."""
    model, backbone = _classifier(spec, num_classes)
    training_model, level_heads = build.training_outputs(model, spec.head), []
    if level_sizes:
        training_model, level_heads = build.with_level_heads(model, training_model, level_sizes)
        log.info("auxiliary heads of %s classes on the coarser levels, weighted %s "
                 "(--level_weights; trained, not exported)",
                 " and ".join(str(n) for n in level_sizes),
                 ", ".join(f"{w:g}" for w in fit.level_weights))
    if pretrained is not None:
        weights.apply(backbone, pretrained)
        if pretrained.head:
            loaded = init_from.apply_head(model, pretrained.head)
            log.info("--init_from: %s from %s", ", ".join(loaded) or "no layer after the "
                     "backbone", pretrained.path)
    else:
        weights.warn_random(spec.backbone)
        if spec.zero_init_residual:
            blocks = build.zero_init_residuals(backbone)
            if blocks:
                log.info("random start: each of the %d residual blocks starts as the identity "
                         "(its last BatchNorm's scale at 0; --zero_init_residual)", blocks)
    momentum = build.fit_bn_momentum(backbone, steps * fit.max_epochs)
    if momentum is not None:
        log.info("BatchNorm momentum lowered to %.3f: %d steps are too few for the "
                 "backbone's own", momentum, steps * fit.max_epochs)
    stages = build.backbone_stages(backbone)
    plan = phases.plan(fit.freeze_epochs, fit.max_epochs, fit.unfreeze_every, len(stages),
                       pretrained is not None, fit.freeze_backbone)
    if fit.unfreeze_every and len(stages) < 2:
        log.warning("--unfreeze_every=%d: %s has no stages to unfreeze one at a time; every "
                    "layer unfreezes at once", fit.unfreeze_every, spec.backbone)
    schedule = optim.phased_schedule(fit.lr_schedule, fit.learning_rate, steps,
                                     phases.spans(plan),
                                     fit.warmup_epochs, fit.step_epochs, fit.step_gamma,
                                     fit.restart_epochs, fit.restart_mult)
    decay = optim.weight_decay_for(fit.optimizer, fit.weight_decay)
    optimizer = optim.make_optimizer(fit.optimizer, schedule, decay, fit.momentum, fit.ema)
    log.info("optimizer %s, weight decay %g%s%s", fit.optimizer, decay,
             " (biases and BatchNorm excluded)" if decay else "",
             f"; validation, best weights and export use the weights' moving average "
             f"(--ema={fit.ema}; BatchNorm statistics as trained)" if fit.ema else "")
    if mixed:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(training_model.trainable_variables)  # every layer, before any freezing
    optim.scale_learning_rates(optimizer, backbone.trainable_variables, fit.backbone_lr_mult)
    if fit.backbone_lr_mult != 1.0:
        log.info("the backbone trains at %g x the learning rate (--backbone_lr_mult), the "
                 "head at the rate itself%s", fit.backbone_lr_mult,
                 "" if pretrained is not None else "; note: the backbone starts from random "
                 "weights")
    loss_fn = losses.make_loss(spec.loss, spec.label_smoothing, reduction=None,
                               head=spec.head, head_scale=spec.head_scale,
                               head_margin=spec.head_margin, focal_gamma=spec.focal_gamma)
    model.optimizer = optimizer  # what ReduceLROnPlateau adjusts
    return Parts(model, backbone, optimizer, loss_fn, schedule, plan, stages, training_model,
                 level_heads)


class RemoteSync:
    """The run's logs and weights between the local work folder and a remote train_url (the
    chief's, and only when train_url is remote): an earlier run's pulled at the start, the
    logs pushed after each epoch (the weights mirror themselves: BestWeights)."""

    def __init__(self, train_url, work_dir, chief):
        self.train_url, self.work_dir = train_url, work_dir
        self.remote = chief and obs_utils.is_remote(train_url)
        self.csv_log = os.path.join(work_dir, "training_log.csv")
        self.tensorboard_dir = os.path.join(work_dir, "tensorboard")
        self.weights_url = obs_utils.join(train_url, "weights") if self.remote else None

    def _pull(self, name, folder):
        """Bring an earlier run's output down from train_url, on a machine that lacks it."""
        url = obs_utils.join(self.train_url, name)
        if folder and obs_utils.is_dir(url):
            obs_utils.copy_tree(url, os.path.join(self.work_dir, name), progress=False)
        elif not folder and obs_utils.exists(url):
            obs_utils.copy(url, os.path.join(self.work_dir, name))

    def pull_earlier(self, resumed):
        if not self.remote:
            return
        if resumed:  # the earlier epochs' logs, appended to below
            self._pull("training_log.csv", folder=False)
            self._pull("tensorboard", folder=True)
        self._pull("weights", folder=True)  # the best weights so far compete with new ones

    def push_logs(self):
        if not self.remote:
            return
        obs_utils.copy(self.csv_log, obs_utils.join(self.train_url, "training_log.csv"))
        if os.path.isdir(self.tensorboard_dir):
            obs_utils.copy_tree(self.tensorboard_dir,
                                obs_utils.join(self.train_url, "tensorboard"), progress=False)


def _callbacks(fit, best, sync, start_epoch):
    """Keras' callbacks the loop drives (fit: config.FitConfig): best weights, the CSV log,
    TensorBoard (when installed), ReduceLROnPlateau for the plateau schedule, early stopping."""
    found = [best, keras.callbacks.CSVLogger(sync.csv_log, append=start_epoch > 0)]
    if importlib.util.find_spec("tensorboard") is not None:
        found.append(keras.callbacks.TensorBoard(sync.tensorboard_dir, write_graph=False,
                                                 profile_batch=0))
    else:
        log.warning("no TensorBoard logs: the tensorboard package is not installed")
    mode = "max" if run_weights.MONITORS[fit.monitor][1] else "min"
    if fit.lr_schedule == "plateau":
        found.append(keras.callbacks.ReduceLROnPlateau(
            monitor=fit.monitor, mode=mode, factor=fit.plateau_factor,
            patience=fit.plateau_patience, min_lr=fit.learning_rate * 1e-3))
    if fit.early_stop_patience > 0:
        found.append(keras.callbacks.EarlyStopping(
            monitor=fit.monitor, mode=mode, patience=fit.early_stop_patience))
    return found


@dataclass
class Result:
    weights: list        # the last epoch's weights, numpy (read on every worker)
    history: list        # one dict of metrics per epoch run now
    best_weights: str    # the best weights file by --monitor (chief), or None
    log_csv: str         # the per-epoch log


def _host_weights(model):
    """Every weight as numpy, read in cross-replica context on every worker together."""
    return [np.array(weight.numpy()) for weight in model.weights]


def fingerprint(weights):
    """A short hash of every weight, to compare workers or runs."""
    digest = hashlib.sha1()
    for weight in weights:
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def _classifier(spec, num_classes):
    """(model, backbone) as config.ModelConfig `spec` describes them."""
    return build.build_classifier(spec.backbone, num_classes, spec.input_size, spec.dropout,
                                  spec.head, spec.head_scale, spec.pooling, spec.embedding_dim,
                                  spec.subcenters)


def final_model(spec, class_names, result):
    """The model to evaluate and export (spec: config.ModelConfig): built anew outside any
    distribution strategy, in float32 (also after mixed-precision training: serving runs on
    CPUs too), holding the best weights by --monitor, else the last epoch's."""
    keras.mixed_precision.set_global_policy("float32")
    model, _ = _classifier(spec, len(class_names))
    if result.best_weights:
        model.load_weights(result.best_weights)
        log.info("best weights restored: %s", os.path.basename(result.best_weights))
    else:
        model.set_weights(result.weights)
    return model
