"""Class balancing, online in the input pipeline (nothing written back to disk).

Policies (`--balance`):
  none          draw each image once per epoch, in a new order each epoch
  oversample    every class drawn equally often (what the 2019 write-up got from 70,000
                augmented copies on disk)
  sqrt          classes drawn in proportion to the square root of their size
  class_weight  draw as `none`, weight the loss by N / (C * n_c) instead

Sampling draws a class from the policy's distribution, then an image of that class uniformly,
with stateless random ops seeded from `seed`: the same seed gives the same stream.
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
