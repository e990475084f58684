"""Class balancing, online in the input pipeline (nothing written back to disk).

Policies (`--balance`):
  none          draw each image once per epoch, in a new order each epoch
  oversample    every class drawn equally often (what the 2019 write-up got from 70,000
                augmented copies on disk)
  sqrt          classes drawn in proportion to the square root of their size
  class_weight  draw as `none`, weight the loss by N / (C * n_c) instead

Sampling draws a class from the policy's distribution, then an image of that class uniformly,
with stateless random ops seeded from `seed`: the same seed gives the same stream.

The P x K sampler (`--sampler=pk`, of re-identification and metric learning) groups the
draws instead: each batch holds P = batch / K classes, K images of each (pk_stream).
"""
import logging

import numpy as np
import tensorflow as tf

from errors import UserError

log = logging.getLogger("inputs")

POLICIES = ("none", "oversample", "sqrt", "class_weight")


def class_probabilities(counts, policy):
    """Probability of drawing each class per draw (classes without images get 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if policy in ("none", "class_weight"):
        weights = counts
    elif policy == "oversample":
        weights = present.astype(np.float64)
    elif policy == "sqrt":
        weights = np.sqrt(counts)
    else:
        raise UserError(f"--balance={policy!r}: use one of {', '.join(POLICIES)}")
    return weights / weights.sum()


def loss_weights(counts, policy):
    """Per-class loss weights (mean 1 over the images) for 'class_weight', else None."""
    if policy != "class_weight":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def log_plan(counts, policy, class_names, draws_per_epoch):
    """Per-class counts before, and the expected draws per epoch after balancing."""
    probs = class_probabilities(counts, policy)
    weights = loss_weights(counts, policy)
    log.info("balance=%s: per class, images -> expected draws per epoch%s", policy,
             " (x loss weight)" if weights is not None else "")
    cells = []
    for i, (name, n) in enumerate(zip(class_names, counts)):
        cell = f"{name}: {n} -> {probs[i] * draws_per_epoch:.0f}"
        if weights is not None:
            cell += f" (x{weights[i]:.2f})"
        cells.append(cell)
    for start in range(0, len(cells), 4):
        log.info("  %s", "   ".join(cells[start:start + 4]))


def index_stream(labels, policy, seed):
    """An endless tf.data stream of sample indices (int64) drawn under `policy`."""
    labels = np.asarray(labels, dtype=np.int64)
    if policy in ("none", "class_weight"):
        # Each image once per epoch, reshuffled every epoch.
        return (tf.data.Dataset.range(len(labels))
                .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).repeat())
    num_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=num_classes)
    logits = tf.constant(np.log(np.maximum(class_probabilities(counts, policy), 1e-30)),
                         dtype=tf.float32)[tf.newaxis]
    order = tf.constant(np.argsort(labels, kind="stable"), dtype=tf.int64)
    starts = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]), dtype=tf.int64)
    sizes = tf.constant(np.maximum(counts, 1), dtype=tf.int64)

    def draw(seeds):
        class_id = tf.random.stateless_categorical(logits, 1, seeds[0:2], dtype=tf.int64)[0, 0]
        offset = tf.random.stateless_uniform([], seeds[2:4], minval=0, maxval=sizes[class_id],
                                             dtype=tf.int64)
        return order[starts[class_id] + offset]

    return tf.data.Dataset.random(seed=seed).batch(4).map(draw)


SAMPLERS = ("random", "pk")


def log_sampler(sampler, policy, batch_size, images_per_class, counts):
    """Refuse what --sampler=pk cannot do (a UserError), and log its batches' make-up."""
    if sampler != "pk":
        return
    if policy != "oversample":
        raise UserError(f"--sampler=pk draws its classes uniformly, as --balance=oversample "
                        f"does; --balance={policy} cannot apply on top: leave --balance out")
    if batch_size % images_per_class:
        raise UserError(f"--sampler=pk fills a batch with K = --pk_images images of each of "
                        f"its classes: --batch_size={batch_size} is not a multiple of "
                        f"--pk_images={images_per_class}")
    per_batch, present = batch_size // images_per_class, int(np.count_nonzero(counts))
    log.info("sampler=pk: each batch %d classes x %d images%s", per_batch, images_per_class,
             "" if per_batch <= present else f" (the data has {present} classes: some come "
             "twice a batch; lower --batch_size or raise --pk_images for distinct ones)")


def pk_stream(labels, batch_size, images_per_class, seed):
    """An endless stream of sample indices, batch_size at a time: P = batch_size / K classes
    (K = images_per_class), distinct while the training set has P classes (else every class
    as evenly as P allows), then K images of each, drawn uniformly with replacement; the K of
    one class follow each other. Classes are drawn uniformly, as --balance=oversample does."""
    labels = np.asarray(labels, dtype=np.int64)
    if images_per_class < 1 or batch_size % images_per_class:
        raise UserError(f"--sampler=pk fills a batch with K = --pk_images images of each of "
                        f"its classes: --batch_size={batch_size} is not a multiple of "
                        f"--pk_images={images_per_class}")
    per_batch = batch_size // images_per_class
    counts = np.bincount(labels)
    present = np.flatnonzero(counts).astype(np.int64)
    rounds = -(-per_batch // len(present))  # permutations of the classes a batch needs
    order = tf.constant(np.argsort(labels, kind="stable"), dtype=tf.int64)
    starts = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]), dtype=tf.int64)
    sizes = tf.constant(counts, dtype=tf.int64)
    classes = tf.constant(present)

    def draw(seeds):
        shuffled = tf.argsort(tf.random.stateless_uniform([rounds, len(present)], seeds[0:2]),
                              axis=1)
        chosen = tf.gather(classes, tf.reshape(shuffled, [-1])[:per_batch])  # [P]
        picks = tf.random.stateless_uniform([per_batch, images_per_class], seeds[2:4])
        offsets = tf.cast(picks * tf.cast(tf.gather(sizes, chosen), tf.float32)[:, None],
                          tf.int64)
        offsets = tf.minimum(offsets, tf.gather(sizes, chosen)[:, None] - 1)
        return tf.reshape(tf.gather(order, tf.gather(starts, chosen)[:, None] + offsets), [-1])

    return tf.data.Dataset.random(seed=seed).batch(4).map(draw).unbatch()
