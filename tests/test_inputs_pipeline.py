"""Balancing, augmentation and the tf.data pipelines, on real (digit) image files."""
import collections
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from inputs import augment, balance, layouts, mixing, pipeline, preprocess, screening
from errors import UserError
from inputs.preprocess import bytes_to_input
from tests.images import broken_files, digit_image, encode, write


def write_imbalanced(root, counts, size=16):
    """Class folders with counts[c] real digit images each (PNG), read back as Samples."""
    i = 0
    for label, count in enumerate(counts):
        for k in range(count):
            image, _ = digit_image(i, size)
            i += 1
            write(root / f"class_{label}" / f"{k}.png", encode(image, "PNG"))
    return layouts.read_index(str(root)).samples


def frequencies(indices, labels):
    counted = collections.Counter(labels[i] for i in indices)
    return np.array([counted[c] for c in range(max(labels) + 1)]) / len(indices)


@pytest.mark.parametrize("policy, expected_minor", [
    ("none", 1 / 11), ("class_weight", 1 / 11), ("sqrt", 1 / (1 + math.sqrt(10))),
    ("oversample", 0.5)])
def test_sampling_frequencies_follow_the_policy(policy, expected_minor):
    labels = [0] * 1000 + [1] * 100
    draws = 11000
    stream = balance.index_stream(labels, policy, seed=3).take(draws)
    indices = list(stream.as_numpy_iterator())
    minor = frequencies(indices, labels)[1]
    # Tolerance: 4 standard deviations of a binomial share over `draws` draws.
    tolerance = 4 * math.sqrt(expected_minor * (1 - expected_minor) / draws)
    assert abs(minor - expected_minor) < tolerance, (policy, minor)
    if policy in ("none", "class_weight"):  # one epoch draws each image exactly once
        assert sorted(indices[:1100]) == list(range(1100))


def test_class_weights_mean_one_over_images():
    weights = balance.loss_weights([1000, 100], "class_weight")
    np.testing.assert_allclose(weights, [1100 / 2000, 1100 / 200])
    assert np.isclose((weights * [1000, 100]).sum() / 1100, 1.0)
    assert balance.loss_weights([1000, 100], "oversample") is None


def test_balanced_training_batches_from_a_10_to_1_set(tmp_path):
    """The real pipeline (files decoded) under oversample: both classes about half each."""
    samples = write_imbalanced(tmp_path, [100, 10])
    ds = pipeline.train_dataset(samples, 2, batch_size=50, input_size=16,
                                balance_policy="oversample", seed=1)
    labels = np.concatenate([y.numpy().argmax(1) for _, y in ds.take(40)])
    share = (labels == 1).mean()
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / len(labels)), share


@pytest.mark.parametrize("classes, per_batch_counts", [(10, {4}), (3, {8, 12})])
def test_pk_batches_hold_p_classes_of_k_images(classes, per_batch_counts):
    """P = 32 / 4 = 8 classes a batch, 4 images each in a row, every index of its class; with
    10 classes the 8 are distinct, with 3 each comes as evenly as 8 groups allow (2 or 3
    groups: 8 or 12 images). Over many batches every class (of sizes 1..400) is drawn about
    equally, and the same seed gives the same stream."""
    labels = np.repeat(np.arange(classes), [1 + 400 * (c % 2) for c in range(classes)])
    stream = balance.pk_stream(labels, 32, 4, seed=5)
    batches = np.array(list(stream.take(32 * 200).as_numpy_iterator())).reshape(200, 32)
    groups = labels[batches].reshape(200, 8, 4)
    assert (groups == groups[:, :, :1]).all()  # K images of one class follow each other
    for batch in labels[batches]:
        assert set(collections.Counter(batch.tolist()).values()) <= per_batch_counts
    if classes >= 8:
        assert all(len(set(g[:, 0])) == 8 for g in groups)
    shares = np.bincount(labels[batches].ravel(), minlength=classes) / batches.size
    np.testing.assert_allclose(shares, 1 / classes, atol=0.02)
    again = np.array(list(balance.pk_stream(labels, 32, 4, seed=5).take(64)
                          .as_numpy_iterator()))
    other = np.array(list(balance.pk_stream(labels, 32, 4, seed=6).take(64)
                          .as_numpy_iterator()))
    assert (again == batches.ravel()[:64]).all() and (other != again).any()


def test_pk_sampler_through_the_pipeline_and_its_refusals(tmp_path, caplog):
    """The real pipeline (files decoded, augmented) under --sampler=pk: one-hot labels in
    groups of K; a batch K does not divide, or --balance other than oversample, is refused."""
    samples = write_imbalanced(tmp_path, [30, 3, 12])
    ds = pipeline.train_dataset(samples, 3, batch_size=12, input_size=16, seed=1,
                                augment_settings=augment.resolve("standard"),
                                sampler="pk", pk_images=2)
    for _, y in ds.take(5):
        groups = y.numpy().argmax(1).reshape(6, 2)
        assert (groups[:, 0] == groups[:, 1]).all()
        assert sorted(np.bincount(groups[:, 0], minlength=3)) == [2, 2, 2]
    caplog.set_level("INFO")
    balance.log_sampler("pk", "oversample", 32, 4, [5, 0, 7])
    assert "sampler=pk: each batch 8 classes x 4 images (the data has 2 classes" in caplog.text
    with pytest.raises(balance.UserError, match="--batch_size=30 is not a multiple of "
                                                "--pk_images=4"):
        balance.log_sampler("pk", "oversample", 30, 4, [5, 7])
    with pytest.raises(balance.UserError, match="--balance=sqrt cannot apply on top"):
        balance.log_sampler("pk", "sqrt", 32, 4, [5, 7])
    balance.log_sampler("random", "sqrt", 30, 4, [5, 7])  # not pk: nothing to refuse


def test_augmentation_keeps_shapes_and_soft_labels_sum_to_one(tmp_path):
    samples = write_imbalanced(tmp_path, [20, 20, 20], size=24)
    settings = augment.resolve("strong", {"cutmix_prob": 0.5, "mixup_prob": 0.5})
    ds = pipeline.train_dataset(samples, 3, batch_size=16, input_size=24,
                                augment_settings=settings, seed=5)
    soft_batches = 0
    for images, labels in ds.take(12):
        assert images.shape == (16, 24, 24, 3) and labels.shape == (16, 3)
        assert float(tf.reduce_min(images)) >= -1e-3 and float(tf.reduce_max(images)) <= 255.5
        np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-5)
        soft_batches += int((labels.numpy().max(axis=1) < 0.999).any())
    assert soft_batches >= 10  # CutMix or MixUp ran on (nearly) every batch


def test_presets_and_overrides():
    none = augment.resolve("none")
    assert not augment.is_geometric(none) and not augment.has_colour(none)
    assert mixing.batch_mixer(augment.resolve("standard")) is None
    assert mixing.batch_mixer(augment.resolve("strong")) is not None
    no_flip = augment.resolve("standard", {"flip": "none", "zoom": None})
    assert no_flip["flip"] == "none" and no_flip["zoom"] == 0.15
    with pytest.raises(ValueError, match="--augment"):
        augment.resolve("extreme")
    with pytest.raises(ValueError, match="must not exceed 1"):
        augment.resolve("none", {"cutmix_prob": 0.7, "mixup_prob": 0.7})


def test_letterbox_keeps_the_aspect_ratio_and_stretch_does_not():
    wide = np.full((20, 40, 3), 200, dtype=np.uint8)
    data = encode(__import__("PIL.Image").Image.fromarray(wide), "PNG")
    boxed = bytes_to_input(tf.constant(data), 32, "letterbox").numpy()
    stretched = bytes_to_input(tf.constant(data), 32, "stretch").numpy()
    assert boxed.shape == stretched.shape == (32, 32, 3)
    assert boxed[0].max() == 0 and boxed[-1].max() == 0      # black bars top and bottom
    assert abs(boxed[16].mean() - 200) < 1
    assert abs(stretched.mean() - 200) < 1


def test_training_iteration_survives_the_files_users_bring(tmp_path):
    """Screened data never raises while training, even if a file breaks after screening."""
    root = tmp_path / "data"
    for k in range(12):
        image, _ = digit_image(k, 24)
        write(root / "a" / f"{k}.jpg", encode(image))
        write(root / "b" / f"{k}.png", encode(image.rotate(90), "PNG"))
    for name, (data, _reason) in broken_files().items():
        write(root / "b" / name, data)
    index = layouts.read_index(str(root))
    usable, _ = screening.screen(index, str(tmp_path / "converted"))
    victim = next(s for s in usable if s.rel.startswith("a/"))
    ds = pipeline.train_dataset(usable, 2, batch_size=8, input_size=24,
                                augment_settings=augment.resolve("standard"), seed=0)
    open(victim.path, "wb").write(b"broken after screening")
    seen = sum(int(y.shape[0]) for _, y in ds.take(30))
    assert seen == 240
    ev = pipeline.eval_dataset([s for s in usable if s is not victim], 2, 8, 24, cache=True)
    assert sum(int(y.shape[0]) for _, y in ev) == len(usable) - 1


def test_cached_and_deterministic_pipelines_agree(tmp_path):
    samples = write_imbalanced(tmp_path, [10, 10], size=24)
    kwargs = dict(num_classes=2, batch_size=4, input_size=24, balance_policy="oversample",
                  augment_settings=augment.resolve("light"), seed=11, deterministic=True)
    first = [x.numpy() for x, _ in pipeline.train_dataset(samples, **kwargs).take(3)]
    second = [x.numpy() for x, _ in pipeline.train_dataset(samples, **kwargs).take(3)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # --cache_images keeps the images as decoded: with the strong augmentation (rotation,
    # colour, CutMix and MixUp) the cached pipeline gives exactly the uncached one's batches,
    # where a cache of letterboxed copies resampled every image a second time.
    for i in range(8):  # pictures that are not square and larger than the output
        image, _ = digit_image(i, 40)
        write(tmp_path / "wide" / f"class_{i % 2}" / f"{i}.png",
              encode(image.resize((40, 26)), "PNG"))
    samples = layouts.read_index(str(tmp_path / "wide")).samples
    strong = augment.resolve("strong", {"cutmix_prob": 0.5, "mixup_prob": 0.5})
    for settings in (augment.resolve("none"), strong):
        plain, cached = (
            [(x.numpy(), y.numpy()) for x, y in pipeline.train_dataset(
                samples, 2, 4, 24, "letterbox", "oversample", settings, seed=2,
                cache_images=cache, deterministic=True).take(3)]
            for cache in (False, True))
        for (x1, y1), (x2, y2) in zip(plain, cached):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)


def gradient_image(height=30, width=50):
    """A picture whose left and right, top and bottom differ (to see flips and padding)."""
    x = np.linspace(0, 250, width)[None, :, None]
    y = np.linspace(0, 120, height)[:, None, None]
    return tf.constant(np.broadcast_to(x + y * [0, 1, 0] + [0, 0, 60],
                                       (height, width, 3)).astype(np.uint8))


def smooth_image(height=30, width=50):
    """Ramps in x (red) and y (green) that never wrap past 255: a misplaced pixel shows."""
    y, x = np.mgrid[0:height, 0:width]
    return tf.constant(np.stack([x * 4 + 20, y * 4 + 20, np.full_like(x, 100)], -1)
                       .astype(np.uint8))


def fixed_params(zoom=1.0, shift=(0.0, 0.0), flip=(False, False)):
    """One image's augment.random_params, chosen by hand (no rotation, no colour change)."""
    return {"zoom": tf.constant(zoom), "shift": tf.constant(shift), "flip": tf.constant(flip),
            "angle": tf.constant(0.0), "contrast": tf.constant(1.0), "colour": tf.eye(3)}


def one_image(params, k):
    return {name: value[k] for name, value in params.items()}


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_augmented_resize_without_augmentation_is_the_plain_resize(mode):
    """Training folds augmentation into the resize; with nothing to add it must be the resize
    that evaluation and serving use (else training and serving see different pictures)."""
    image = gradient_image()
    plain = preprocess.resize_image(image, 32, mode).numpy()
    still = augment.resolve("none", {"flip": "none"})
    params = one_image(augment.random_params(still, tf.constant([1, 2], tf.int64), 1), 0)
    placed = augment.augment_image(image, 32, mode, still, params).numpy()
    np.testing.assert_allclose(placed, plain, atol=1e-3)
    warped = augment.warp_to_size(image, 32, mode, params).numpy()
    inner = (slice(8, 24), slice(2, 30)) if mode == "letterbox" else (slice(2, 30),) * 2
    np.testing.assert_allclose(warped[inner], plain[inner], atol=2.0)
    if mode == "letterbox":  # the black bars are where the plain resize puts them
        assert warped[:5].max() < 1 and warped[-5:].max() < 1


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
@pytest.mark.parametrize("zoom, shift, flip", [
    (1.5, (0.0, 0.0), (False, False)), (0.7, (0.2, -0.3), (False, False)),
    (1.0, (0.0, 0.0), (True, False)), (1.3, (0.1, 0.1), (True, True)),
    (0.6, (-0.3, 0.35), (False, True))])
def test_fast_placement_draws_what_the_projective_warp_draws(mode, zoom, shift, flip):
    """Without rotation the pipeline resizes and pads (3x faster) instead of warping; both
    must put the same picture in the same place, to the pixel."""
    image = smooth_image()
    settings = augment.resolve("none", {"flip": "both", "zoom": 0.5, "shift": 0.5})
    params = fixed_params(zoom, shift, flip)
    placed = augment.augment_image(image, 32, mode, settings, params).numpy()
    warped = augment.warp_to_size(image, 32, mode, params).numpy()
    shown_p, shown_w = placed.max(-1) > 0, warped.max(-1) > 0
    assert (shown_p != shown_w).mean() <= 0.07      # at most a row or column of the edge
    inner = ndimage.binary_erosion(shown_p & shown_w)
    assert inner.sum() >= 50
    # the ramps climb 4 to 7 per output pixel: a mean under 6 is within a pixel
    assert np.abs(placed - warped)[inner].mean() < 6


def test_flip_mirrors_about_half_the_images():
    image = gradient_image()
    plain = preprocess.resize_image(image, 32, "stretch").numpy()
    flip = augment.resolve("none", {"flip": "horizontal"})
    params = augment.random_params(flip, tf.constant([7, 7], tf.int64), 16)
    outcomes = []
    for k in range(16):
        got = augment.augment_image(image, 32, "stretch", flip, one_image(params, k)).numpy()
        if np.allclose(got, plain, atol=1e-3):
            outcomes.append("same")
        elif np.allclose(got, plain[:, ::-1], atol=1e-3):
            outcomes.append("mirrored")
        else:
            outcomes.append("other")
    assert "other" not in outcomes and 3 <= outcomes.count("mirrored") <= 13, outcomes


def test_colour_matrix_keeps_luma_and_turns_colour():
    rgb = tf.constant([[200.0, 60.0, 30.0], [10.0, 120.0, 240.0]])
    luma = rgb @ tf.constant([[0.299], [0.587], [0.114]])
    same = augment.colour_matrix(tf.constant(1.0), tf.constant(1.0), tf.constant(0.0))
    np.testing.assert_allclose(same.numpy(), np.eye(3), atol=1e-5)
    grey = (rgb @ augment.colour_matrix(tf.constant(1.0), tf.constant(0.0), tf.constant(0.0)))
    np.testing.assert_allclose(grey.numpy(), np.repeat(luma.numpy(), 3, axis=1), atol=1e-3)
    darker = rgb @ augment.colour_matrix(tf.constant(0.5), tf.constant(1.0), tf.constant(0.0))
    np.testing.assert_allclose(darker.numpy(), rgb.numpy() * 0.5, atol=1e-3)
    turned = rgb @ augment.colour_matrix(tf.constant(1.0), tf.constant(1.0), tf.constant(0.5))
    np.testing.assert_allclose((turned @ tf.constant([[0.299], [0.587], [0.114]])).numpy(),
                               luma.numpy(), atol=1e-3)   # a hue turn keeps the luma
    assert turned[0, 0] < turned[0, 2]                   # and makes the red pixel blue
    batch = augment.colour_matrix(tf.ones([4]), tf.ones([4]), tf.constant([0.0, 0.125, 0.5, 1.0]))
    assert batch.shape == (4, 3, 3)
    np.testing.assert_allclose(batch[3].numpy(), np.eye(3), atol=1e-5)  # a full turn
    eighth = batch[1].numpy()                                           # eight 1/8 turns
    np.testing.assert_allclose(np.linalg.matrix_power(eighth, 8), np.eye(3), atol=1e-4)


@pytest.mark.parametrize("rotation", [0.0, 10.0])
def test_colour_jitter_leaves_the_letterbox_bars_black(rotation):
    """On the resize path and on the rotation (warp) path: contrast and brightness act on the
    picture, the bars stay 0 as serving sees them (turned by at most 10 degrees, the picture
    of this 2:1 image stays within rows 5..26 of 32)."""
    strong = augment.resolve("strong", {"rotation": rotation, "zoom": 0.0, "shift": 0.0})
    params = augment.random_params(strong, tf.constant([3, 4], tf.int64), 8)
    for k in range(8):
        got = augment.augment_image(smooth_image(), 32, "letterbox", strong,
                                    one_image(params, k)).numpy()
        assert got[:4].max() == 0 and got[-4:].max() == 0, (k, got[:4].max(), got[-4:].max())
        assert 0 <= got.min() and got.max() <= 255 and got[10:22].max() > 0




def test_deterministic_pipelines_with_the_mixers_on_repeat_exactly(tmp_path):
    """--deterministic=true with CutMix and MixUp on (and rotation, the warp path): the same
    seed gives the same batches, labels included; another seed others."""
    samples = write_imbalanced(tmp_path, [10, 10, 10], size=24)
    settings = augment.resolve("strong", {"cutmix_prob": 0.5, "mixup_prob": 0.5})

    def batches(seed):
        ds = pipeline.train_dataset(samples, 3, batch_size=6, input_size=24,
                                    augment_settings=settings, seed=seed, deterministic=True)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(6)]

    first, second, other = batches(4), batches(4), batches(5)
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any((y1.max(axis=1) < 0.999).any() for _, y1 in first)  # the mixers did mix
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other))


@pytest.mark.parametrize("preset,policy", [("randaugment", {"randaugment_ops": 2}),
                                           ("augmix", {"augmix_chains": 3})])
def test_policies_draw_per_image_repeat_under_deterministic_and_stay_float32(tmp_path, preset,
                                                                             policy):
    """--augment=randaugment / augmix (Keras' layers, on each image): one source image drawn
    six times in a batch comes out six ways (each image its own ops), the same seed repeats
    every batch under --deterministic=true, another seed differs; built under the
    mixed_float16 policy, the images are still float32 in 0..255."""
    import keras

    one = write_imbalanced(tmp_path / "one", [1], size=24)
    settings = augment.resolve("none", policy)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        def batches(seed, samples=one, given=settings, count=3):
            ds = pipeline.train_dataset(samples, 1, batch_size=6, input_size=24,
                                        augment_settings=given, seed=seed, deterministic=True)
            return [x.numpy() for x, _ in ds.take(count)]

        first, second, other = batches(4), batches(4), batches(5)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    plain = batches(4, given=augment.resolve("none"), count=1)[0][0]
    batch = first[0]
    assert batch.dtype == np.float32 and batch.min() >= 0 and batch.max() <= 255
    distinct = {batch[i].tobytes() for i in range(6)}
    assert len(distinct) == 6, "every image draws its own ops and strengths"
    assert sum(not np.allclose(image, plain, atol=1) for image in batch) >= 5
    for x1, x2 in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert augment.resolve(preset)[next(iter(policy))] == next(iter(policy.values()))


@pytest.mark.parametrize("overrides,message", [
    ({"randaugment_strength": 0.0}, "--randaugment_strength=0"),
    ({"augmix_chains": -1}, "--augmix_chains=-1"),
    ({"augmix_strength": 1.5}, "--augmix_strength=1.5"),
    ({"augmix_chains": 2, "randaugment_ops": 1}, "use one policy")])
def test_policy_settings_out_of_range_are_refused_in_one_line(overrides, message):
    with pytest.raises(UserError, match=message):
        augment.resolve("none", overrides)


def test_mixup_and_cutmix_compute_in_float32_under_mixed_precision():
    """Under the mixed_float16 policy the mixers still work in float32: a MixUp image is
    lambda a + (1 - lambda) b to 1e-3 (float16 would be off by up to 0.06 at 255), and a
    CutMix label is exactly the share of pixels pasted from the partner."""
    import keras

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32"))
    labels = tf.constant(np.eye(2, dtype="float32"))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for seed in range(6):
            mixed, soft = mixing.mixup(images, labels, tf.constant([seed, 1]), alpha=0.4)
            assert mixed.dtype == tf.float32
            for i in range(2):  # labels [w, 1 - w] name the partner's share
                expected = soft[i, 0] * images[0] + soft[i, 1] * images[1]
                np.testing.assert_allclose(mixed[i].numpy(), expected.numpy(), atol=1e-3)
            mixed, soft = mixing.cutmix(images, labels, tf.constant([seed, 2]), alpha=1.0)
            for i in range(2):
                from_other = np.all(mixed[i].numpy() == images[1 - i].numpy(), axis=-1).mean()
                np.testing.assert_allclose(soft[i, 1 - i], from_other, atol=1e-6)
                np.testing.assert_allclose(soft[i].numpy().sum(), 1.0, atol=1e-6)
    finally:
        keras.mixed_precision.set_global_policy("float32")
