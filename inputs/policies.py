"""RandAugment (Cubuk et al. 2019) and AugMix (Hendrycks et al. 2020) for one float 0..255
image inside tf.data, from Keras' public preprocessing layers (its 11 ops).

Not Keras' own RandAugment and AugMix layers. Keras' AugMix picks each chain's ops with
Python's `random` while it is traced, so inside a tf.data map every image of a run gets the
same ops (only their strengths vary), and another run other ops whatever the seed. Keras'
RandAugment computes all 11 ops for every slot and keeps one (at 224 px 25 ms an image), and
hands each op the range (0, factor): rotations of 0 to 180 degrees one way and shifts of up to
half the side one way at its default 0.5. Here each image draws its ops from a seeded
generator, tf.switch_case runs only the chosen ones, and each op moves both ways. AugMix has no
Jensen-Shannon consistency loss: it would cost three forward passes an image."""
import keras
import tensorflow as tf


def keras_ops(strength, seed):
    """Keras' 11 ops (RandAugment's, and AugMix's with all_ops=True), each at +-`strength` as
    its factor, except rotation: Keras' factor is a share of a full turn (0.3 would be +-108
    degrees), so here it is strength / 6 of a turn (+-18 degrees at 0.3). float32 under mixed
    precision."""
    kw = {"seed": seed, "dtype": "float32"}
    value = {"value_range": (0, 255)}
    return [
        keras.layers.RandomShear(x_factor=strength, y_factor=strength, **kw),
        keras.layers.RandomTranslation(strength, strength, fill_mode="constant", **kw),
        keras.layers.RandomRotation(strength / 6, fill_mode="constant", **kw),
        keras.layers.RandomPosterization(factor=max(1, int(8 * strength)), **value, **kw),
        keras.layers.Solarization(addition_factor=strength, threshold_factor=strength,
                                  **value, **kw),
        keras.layers.AutoContrast(**value, dtype="float32"),
        keras.layers.Equalization(**value, dtype="float32"),
        keras.layers.RandomBrightness(strength, **value, **kw),
        keras.layers.RandomColorDegeneration(strength, **kw),
        keras.layers.RandomContrast(strength, **value, **kw),
        keras.layers.RandomSharpness(strength, **value, **kw),
    ]


def _switch(ops):
    """(image, index) -> ops[index] applied to it; index len(ops): the image as it is."""
    def one_op(image, index):
        return tf.switch_case(index, [lambda op=op: op(image, training=True) for op in ops]
                              + [lambda: image])
    return one_op


def randaugment(count, strength, seed):
    """A function of one float32 [H, W, 3] image in 0..255: `count` ops drawn per image
    (with repeats, as in the paper) from keras_ops(strength), one after the other."""
    ops = keras_ops(strength, seed)
    generator = keras.random.SeedGenerator(seed + 1)
    one_op = _switch(ops)

    def apply(image):
        choice = keras.random.randint([count], 0, len(ops), seed=generator)
        for i in range(count):
            image = one_op(image, choice[i])
        return tf.clip_by_value(image, 0.0, 255.0)

    return apply


def augmix(chains, depth, strength, seed, alpha=1.0):
    """A function of one float32 [H, W, 3] image in 0..255: `chains` chains, each of 1 to
    `depth` ops drawn per image, mixed with Dirichlet(alpha) weights, then blended with the
    image itself by a Beta(alpha, alpha) weight (the paper's defaults: 3 chains, depth 1-3,
    alpha 1). Its draws come from seeded generators (a state), in call order."""
    ops = keras_ops(strength, seed)
    generator = keras.random.SeedGenerator(seed + 1)
    one_op = _switch(ops)

    def apply(image):
        choice = keras.random.randint([chains, depth], 0, len(ops), seed=generator)
        length = keras.random.randint([chains], 1, depth + 1, seed=generator)
        weights = keras.random.gamma([chains], alpha, seed=generator)
        weights = weights / tf.reduce_sum(weights)  # Dirichlet(alpha)
        pair = keras.random.gamma([2], alpha, seed=generator)
        keep = pair[0] / (pair[0] + pair[1])  # Beta(alpha, alpha)
        mixed = tf.zeros_like(image)
        for c in range(chains):
            chained = image
            for d in range(depth):
                chained = one_op(chained, tf.where(d < length[c], choice[c, d], len(ops)))
            mixed += weights[c] * chained
        return tf.clip_by_value(keep * image + (1.0 - keep) * mixed, 0.0, 255.0)

    return apply
