"""The tf.data pipelines. Training: balanced sampling -> read -> decode -> resize with the
geometric augmentation folded into it -> colour augmentation -> RandAugment -> batch -> one-hot ->
CutMix/MixUp -> prefetch. Evaluation: file order, no augmentation. Both decode through
preprocess.decode_for_size, and evaluation resizes as preprocess.bytes_to_input, the function
serving uses too."""
import logging

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from . import augment, balance, mixing
from .preprocess import bytes_to_input, decode_for_size, resize_image

log = logging.getLogger("inputs")
AUTOTUNE = tf.data.AUTOTUNE


def _options(deterministic):
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return options


def _decoded(paths, input_size, resize_mode):
    """Dataset of float32 0..255 images for `paths`, in order, decoded in parallel."""
    return (tf.data.Dataset.from_tensor_slices(paths)
            .map(lambda p: bytes_to_input(tf.io.read_file(p), input_size, resize_mode),
                 num_parallel_calls=AUTOTUNE, deterministic=True))


def decode_to_memory(samples, input_size, resize_mode):
    """Every image decoded once and kept as it came out of the decoder (uint8, its own size:
    JPEGs at the reduced scale decode_for_size picks), so that the augmentation resamples it
    once, as without the cache, instead of a second time from an already letterboxed copy."""
    paths = tf.constant([s.path for s in samples])
    decoded = (tf.data.Dataset.range(len(samples))
               .map(lambda i: decode_for_size(tf.io.read_file(paths[i]), input_size, resize_mode),
                    num_parallel_calls=AUTOTUNE, deterministic=True))
    cache = [image.numpy() for image in tqdm(decoded, total=len(samples), unit="image",
                                             desc="caching", mininterval=2)]
    log.info("cached %d decoded images in memory (%.2f GB)", len(cache),
             sum(image.nbytes for image in cache) / 1e9)
    return cache


def train_dataset(samples, num_classes, batch_size, input_size, resize_mode="letterbox",
                  balance_policy="oversample", augment_settings=None, seed=0,
                  cache_images=False, deterministic=False, sampler="random", pk_images=4,
                  targets=None, skip_batches=0):
    """Endless dataset of (images float32 [B, S, S, 3], labels float32 one-hot/soft [B, C]);
    sampler "pk" makes each batch P classes x `pk_images` images (inputs/balance.py);
    `targets` ([N, C], a distilled round's: inputs/oof.targets) replace the one-hot labels
    (balancing still goes by the true class). `skip_batches`: start where that many batches
    of the same stream have been drawn (a resume within an epoch); the indices, their
    augmentation and the mixers' seeds are skipped before any image is read. RandAugment's
    and AugMix's generators draw anew."""
    labels = np.array([s.label for s in samples], dtype=np.int64)
    label_table = tf.constant(labels if targets is None else np.asarray(targets, np.float32))
    settings = augment_settings or augment.resolve("none")
    augmented = augment.is_geometric(settings) or augment.has_colour(settings)
    if cache_images:
        cache = decode_to_memory(samples, input_size, resize_mode)

        def image_of(i):  # as decoded: the same resampling as from the file
            image = tf.numpy_function(lambda j: cache[j], [i], tf.uint8, stateful=False)
            image.set_shape([None, None, 3])
            return image
    else:
        paths = tf.constant([s.path for s in samples])

        def image_of(i):
            return decode_for_size(tf.io.read_file(paths[i]), input_size, resize_mode)

    def load(i, params):
        image = image_of(i)
        if augmented:
            image = augment.augment_image(image, input_size, resize_mode, settings, params)
        else:
            image = resize_image(image, input_size, resize_mode)
        return image, label_table[i]

    indices = (balance.pk_stream(labels, batch_size, pk_images, seed) if sampler == "pk"
               else balance.index_stream(labels, balance_policy, seed))
    params = augment.param_stream(settings, seed + 1)
    ds = (tf.data.Dataset.zip(indices, params).skip(skip_batches * batch_size)
          .map(load, num_parallel_calls=AUTOTUNE))
    policy = augment.policy(settings, seed + 3)
    if policy is not None:  # a stateful generator: its draws in order only when sequential
        ds = ds.map(lambda image, label: (policy(image), label),
                    num_parallel_calls=None if deterministic else AUTOTUNE)
    ds = (ds.batch(batch_size, drop_remainder=True)
          # Screening removed every file the decoder rejects; a file broken since then costs
          # its batch, with a warning, rather than ending a long run. (Skipping per image,
          # between map and batch, stops tf.data fusing them: 10% slower.)
          .ignore_errors(log_warning=True))
    if targets is None:
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes, dtype=tf.float32)))
    mixer = mixing.batch_mixer(settings)
    if mixer is not None:  # each batch its own stateless seed: the same --seed, the same mix
        ds = (tf.data.Dataset.zip(ds, mixing.batch_seeds(seed + 2).skip(skip_batches))
              .map(lambda batch, batch_seed: mixer(*batch, batch_seed),
                   num_parallel_calls=AUTOTUNE))
    return ds.prefetch(AUTOTUNE).with_options(_options(deterministic))


def eval_dataset(samples, num_classes, batch_size, input_size, resize_mode="letterbox",
                 cache=False):
    """Finite dataset in sample order of (images float32, one-hot labels), no augmentation."""
    labels = tf.constant([s.label for s in samples], dtype=tf.int64)
    images = _decoded([s.path for s in samples], input_size, resize_mode)
    ds = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(labels))
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes, dtype=tf.float32)))
    if cache:
        ds = ds.cache()
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def steps_per_epoch(num_train, batch_size):
    """One epoch draws as many images as the training set holds (at least one batch)."""
    return max(1, num_train // batch_size)
