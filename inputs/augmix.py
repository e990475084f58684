"""AugMix (Hendrycks et al. 2020, "AugMix: A Simple Data Processing Method to Improve
Robustness and Uncertainty") for one float 0..255 image inside tf.data, from Keras' public
preprocessing layers.

Not Keras' own AugMix layer: it picks each chain's ops with Python's `random` while it is
traced, so inside a tf.data map every image of a run gets the same ops (only their strengths
vary), and another run other ops whatever the seed. Here the ops are drawn per image from a
seeded generator and run through tf.switch_case, so only the chosen op computes (Keras'
RandAugment computes all 11 and keeps one). No Jensen-Shannon consistency loss: it would cost
three forward passes an image."""
import keras
import tensorflow as tf


def augmix_ops(strength, seed):
    """The ops Keras' AugMix layer mixes (all_ops=True), each at `strength` as Keras' factor,
    except rotation: Keras' factor is a share of a full turn (0.3 would be +-108 degrees), so
    here it is strength / 6 of a turn (+-18 degrees at 0.3). float32 under mixed precision."""
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


def augmix(chains, depth, strength, seed, alpha=1.0):
    """A function of one float32 [H, W, 3] image in 0..255: `chains` chains, each of 1 to
    `depth` ops drawn per image, mixed with Dirichlet(alpha) weights, then blended with the
    image itself by a Beta(alpha, alpha) weight (the paper's defaults: 3 chains, depth 1-3,
    alpha 1). Its draws come from seeded generators (a state), in call order."""
    ops = augmix_ops(strength, seed)
    generator = keras.random.SeedGenerator(seed + 1)

    def one_op(image, index):  # index len(ops): the image as it is (a chain's end)
        return tf.switch_case(index, [lambda op=op: op(image, training=True) for op in ops]
                              + [lambda: image])

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
