"""Test-time views of a batch of images already at the network's input size: the exported
serving function and the evaluation of a Keras model take the same views from here, so a
package's probabilities and the metrics written into it cannot differ.

    none   the image as it is                                               1 view
    flip   and its mirror image                                             2 views
    crops  and the four corners of the image enlarged 1.15x                 6 views

Every view has the input's shape, so all views of a batch go through the network in one call.
"""
import tensorflow as tf

CHOICES = ("none", "flip", "crops")  # flags.TTA
CROP_ZOOM = 1.15  # the crops' enlargement (the garbage write-up's five-crop TTA, corners of it)
SCALE_STEP = 2 ** -0.5  # multi-scale views a factor sqrt(2) apart (as in Radenovic et al.)


def views(pixels, size, tta):
    """The views `tta` names of [B, size, size, 3] pixels: a list of tensors of that shape."""
    if tta not in CHOICES:
        raise ValueError(f"unknown test-time augmentation {tta!r}: one of {CHOICES}")
    found = [pixels]
    if tta in ("flip", "crops"):
        found.append(pixels[:, :, ::-1, :])
    if tta == "crops":
        large = int(round(size * CROP_ZOOM))
        enlarged = tf.image.resize(pixels, [large, large])
        far = large - size
        found += [enlarged[:, top:top + size, left:left + size, :]
                  for top in (0, far) for left in (0, far)]
    return found


def count(tta):
    """How many views `tta` makes: views() of one 2 x 2 image, counted (eagerly, also when
    called while a function is traced: nothing is added to its graph)."""
    with tf.init_scope():
        return len(views(tf.zeros([1, 2, 2, 3]), 2, tta))


def mean_over_views(outputs, batch, views_count):
    """[views * B, ...] outputs of the stacked views (view-major, as tf.concat(views) stacks
    them) -> the mean over the views, [B, ...]. Summed slice by slice: AddV2 is in every
    runtime's op list."""
    total = outputs[:batch]
    for i in range(1, views_count):
        total += outputs[i * batch:(i + 1) * batch]
    return total if views_count == 1 else total / float(views_count)


def multiscale_views(pixels, size):
    """Three views of [B, size, size, 3] pixels at the network's fixed input size, for
    retrieval's embed_multiscale: as they are; coarser (shrunk by 1/sqrt(2) and enlarged back,
    finer detail gone); finer (the central 1/sqrt(2) of each side enlarged to the full size)."""
    small = max(1, int(round(size * SCALE_STEP)))
    coarse = tf.image.resize(tf.image.resize(pixels, [small, small]), [size, size])
    start = (size - small) // 2
    fine = tf.image.resize(pixels[:, start:start + small, start:start + small, :],
                           [size, size])
    return [pixels, coarse, fine]
