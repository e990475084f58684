"""CutMix and MixUp on batches with one-hot labels, drawn from stateless seeds, in float32.

Per batch, CutMix runs with probability `cutmix_prob`, else MixUp with probability
`mixup_prob`, else neither; soft labels still sum to 1. Each batch gets its own seed from
the pipeline (a seeded tf.data.Dataset.random), so the same --seed gives the same batches
with --deterministic=true. Why not keras.layers.CutMix / MixUp: they draw from a stateful
SeedGenerator, which a parallel tf.data map advances in whatever order its calls run (the
batches differ run to run), and they compute in the global dtype policy (float16 under mixed
precision: pixel values off by up to 0.06, labels by 1e-3). The maths is theirs and the
papers': MixUp (Zhang et al. 2018) mixes each image with a shuffled partner by
lambda ~ Beta(alpha, alpha); CutMix (Yun et al. 2019) pastes a box of area 1 - lambda from the
partner and mixes the labels by the box's real (clipped) area.
"""
import tensorflow as tf


def _beta(seed, alpha, count):
    """`count` draws of Beta(alpha, alpha), as the ratio of two stateless Gamma draws."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma([count], seeds[0], alpha)
    b = tf.random.stateless_gamma([count], seeds[1], alpha)
    return a / tf.maximum(a + b, 1e-12)


def _partners(seed, count):
    """A stateless shuffle of the batch: each image's partner."""
    return tf.argsort(tf.random.stateless_uniform([count], seed))


def mixup(images, labels, seed, alpha):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    count = tf.shape(images)[0]
    weight = _beta(seeds[0], alpha, count)
    partner = _partners(seeds[1], count)
    w = weight[:, tf.newaxis, tf.newaxis, tf.newaxis]
    mixed = w * images + (1.0 - w) * tf.gather(images, partner)
    soft = weight[:, tf.newaxis] * labels + (1.0 - weight[:, tf.newaxis]) * tf.gather(
        labels, partner)
    return mixed, soft


def cutmix(images, labels, seed, alpha):
    seeds = tf.random.experimental.stateless_split(seed, 4)
    count = tf.shape(images)[0]
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    side = tf.sqrt(1.0 - _beta(seeds[0], alpha, count))  # the box's side, as a fraction
    box_h = tf.cast(tf.round(side * tf.cast(height, tf.float32)), tf.int32)
    box_w = tf.cast(tf.round(side * tf.cast(width, tf.float32)), tf.int32)
    centre_y = tf.random.stateless_uniform([count], seeds[1], 0, height, tf.int32)
    centre_x = tf.random.stateless_uniform([count], seeds[2], 0, width, tf.int32)
    y0 = tf.clip_by_value(centre_y - box_h // 2, 0, height)
    y1 = tf.clip_by_value(centre_y + box_h - box_h // 2, 0, height)
    x0 = tf.clip_by_value(centre_x - box_w // 2, 0, width)
    x1 = tf.clip_by_value(centre_x + box_w - box_w // 2, 0, width)
    rows = tf.range(height)[tf.newaxis, :, tf.newaxis]
    cols = tf.range(width)[tf.newaxis, tf.newaxis, :]
    inside = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
    partner = _partners(seeds[3], count)
    mixed = tf.where(inside[..., tf.newaxis], tf.gather(images, partner), images)
    pasted = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(height * width, tf.float32)
    soft = (1.0 - pasted[:, tf.newaxis]) * labels + pasted[:, tf.newaxis] * tf.gather(
        labels, partner)
    return mixed, soft


def batch_mixer(settings, seed=0):
    """fn(images, one-hot labels, batch seed [2] int64) -> (images, soft labels), or None
    when both probabilities are 0."""
    p_cut, p_mix = float(settings["cutmix_prob"]), float(settings["mixup_prob"])
    if not p_cut and not p_mix:
        return None
    cut_alpha, mix_alpha = float(settings["cutmix_alpha"]), float(settings["mixup_alpha"])

    def mix(images, labels, batch_seed):
        images, labels = tf.cast(images, tf.float32), tf.cast(labels, tf.float32)
        choose, draw = tf.unstack(tf.random.experimental.stateless_split(batch_seed, 2))
        u = tf.random.stateless_uniform([], choose)
        return tf.cond(u < p_cut, lambda: cutmix(images, labels, draw, cut_alpha),
                       lambda: tf.cond(u < p_cut + p_mix,
                                       lambda: mixup(images, labels, draw, mix_alpha),
                                       lambda: (images, labels)))

    return mix


def batch_seeds(seed):
    """An endless dataset of [2] int64 seeds, the same sequence for the same `seed`."""
    return tf.data.Dataset.random(seed=seed).batch(2)
