"""Build the classifier: 0..255 images -> backbone normalisation -> backbone -> pooling (average,
max or GeM) -> optionally an embedding neck (linear projection + BatchNorm, the BNNeck of
re-identification) -> dropout -> dense softmax, or a cosine head (models/heads.py) -> softmax of
the scaled cosines; the output runs in float32, also under mixed precision. Retrieval embeds
with the neck's output when there is one, else the pooled feature (embedding_layer)."""
import math

import keras

from errors import UserError

from . import backbones
from .heads import HEADS, CosineHead, ScaledSoftmax
from .layers import BackboneNormalization, GeMPooling

POOLINGS = ("avg", "max", "gem")
POOL_LAYER, NECK_LAYER = "pool", "embedding"  # the layers whose output retrieval embeds


def build_classifier(backbone_name, num_classes, input_size, dropout=0.3, head="softmax",
                     head_scale=30.0, pooling="avg", embedding_dim=0, subcenters=3):
    """(model, backbone): the backbone is returned too, to freeze it or load weights into it.
    The model's output is always `probabilities`; a cosine head's are softmax(scale x cos).
    embedding_dim > 0 adds the neck: Dense(embedding_dim, no bias) then BatchNorm, which the
    head reads (and retrieval embeds); 0 leaves the pooled backbone feature as it is.
    `subcenters` is the weight vectors per class of --head=subcenter_arcface."""
    if num_classes < 2:
        raise UserError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
    if embedding_dim < 0:
        raise UserError(f"--embedding_dim={embedding_dim}: use 0 (no neck) or the size of the "
                        "embedding, e.g. 512")
    backbone = backbones.build(backbone_name, input_size)
    images = keras.Input((input_size, input_size, 3), name="images")
    x = BackboneNormalization(backbones.get(backbone_name).normalization,
                              name="normalization")(images)
    x = _pool(pooling)(backbone(x))
    if embedding_dim:
        x = keras.layers.Dense(embedding_dim, use_bias=False, name="embedding_projection")(x)
        x = keras.layers.BatchNormalization(name=NECK_LAYER)(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    if head == "softmax":
        probabilities = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                           name="probabilities")(x)
    elif head in HEADS:
        if subcenters < 1:
            raise UserError(f"--subcenters={subcenters}: use 1 or more weight vectors a class")
        cosines = CosineHead(num_classes, subcenters if head == "subcenter_arcface" else 1,
                             name="cosines")(x)
        probabilities = ScaledSoftmax(head_scale, name="probabilities")(cosines)
    else:
        raise UserError(f"--head={head!r}: use one of {', '.join(HEADS)}")
    return keras.Model(images, probabilities, name=f"{backbone_name}_classifier"), backbone


def _pool(pooling):
    """The layer that turns the backbone's feature map into one vector per image."""
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=POOL_LAYER)
    if pooling == "gem":
        return GeMPooling(name=POOL_LAYER)
    raise UserError(f"--pooling={pooling!r}: use one of {', '.join(POOLINGS)}")


def embedding_layer(model):
    """The layer whose output is the model's retrieval embedding: the neck, else the pooling."""
    names = {layer.name for layer in model.layers}
    return model.get_layer(NECK_LAYER if NECK_LAYER in names else POOL_LAYER)


def training_outputs(model, head):
    """What the training loop's loss reads: the probabilities for the softmax head, the
    cosines for a cosine head (its margin loss needs them; the weights are the same)."""
    if head == "softmax":
        return model
    return keras.Model(model.inputs, model.get_layer("cosines").output)


def with_level_heads(model, outputs, sizes):
    """The training model of `outputs` (training_outputs) plus one auxiliary softmax head per
    coarser level (`sizes`: its classes), on the classifier's pooled features; the heads are
    trained alone, never exported. Returns (model, the heads' layers)."""
    pooled = model.get_layer("pool").output
    heads = [keras.layers.Dense(size, activation="softmax", dtype="float32",
                                name=f"level_{depth}") for depth, size in enumerate(sizes, 1)]
    return keras.Model(model.inputs, [outputs.output, *[head(pooled) for head in heads]]), heads


_STRIDED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
            keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


def backbone_stages(backbone):
    """The backbone's layers as stages, input to output: a stage begins at a strided layer
    whose feature map is smaller than any before it (ResNet50: the stem, then conv2 from the
    max-pool, conv3, conv4, conv5), and a stage without weights joins the next. Squeeze-excite
    pools are not strided layers, so they start nothing, and a Normalization's statistics
    (EfficientNet's input) are not weights to train. [] when the map's size is not known (a
    backbone built without an input size)."""
    stages, current, smallest = [], [], None
    for layer in backbone.layers:
        if isinstance(layer, _STRIDED) and max(layer.strides) > 1:
            height = layer.output.shape[1]
            if height is None:
                return []
            if smallest is None or height < smallest:
                if any(other.weights and not isinstance(other, keras.layers.Normalization)
                       for other in current):
                    stages.append(current)
                    current = []
                smallest = height
        current.append(layer)
    if current:
        stages.append(current)
    return stages


def set_trainable_stages(backbone, stages, top):
    """Train the `top` stages of `stages` (backbone_stages) nearest the output and freeze the
    rest (their BatchNorm in inference mode); top None trains every layer, 0 none. Each
    layer is set: a Functional model's own `trainable` does not reach layers set before."""
    backbone.trainable = top != 0
    if top != 0:
        keep = len(stages) if top is None else top
        for i, stage in enumerate(stages):
            for layer in stage:
                layer.trainable = i >= len(stages) - keep
    return count_weights(backbone.trainable_weights)


def count_weights(weights):
    """How many numbers the given weights hold (from their shapes: nothing is copied)."""
    return sum(math.prod(w.shape) for w in weights)


def fit_bn_momentum(backbone, total_steps):
    """Lower BatchNorm momentum when the run is too short for the backbone's moving averages.

    MobileNetV3 uses momentum 0.999: its moving statistics need thousands of steps to forget
    their initial values, and a shorter run evaluates with statistics that are still wrong
    (validation at chance while training accuracy climbs). Momentum is set so the averaging
    window is at most a tenth of the run, never below 0.9. Returns the new momentum or None."""
    limit = max(0.9, 1.0 - 10.0 / max(total_steps, 1))
    layers = [layer for layer in backbone.layers
              if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > limit]
    for layer in layers:
        layer.momentum = limit
    return limit if layers else None


def _source(tensor):
    """The layer that made `tensor`, looking through Dropout (EfficientNet's drop-connect)."""
    layer = tensor._keras_history[0]
    while isinstance(layer, keras.layers.Dropout):
        layer = layer.input._keras_history[0]
    return layer


def zero_init_residuals(backbone):
    """Start every residual block as the identity: the scale (gamma) of the BatchNorm that
    ends each block's residual branch set to 0 (Goyal et al., 2017, "zero-gamma"), so a
    network trained from random weights starts as a shallow one and its first steps do not
    blow up. The residual branch of an Add is its input built last (the shortcut is built
    before it, in Keras' applications). Returns how many blocks were changed."""
    order = {id(layer): i for i, layer in enumerate(backbone.layers)}
    changed = 0
    for add in (layer for layer in backbone.layers if isinstance(layer, keras.layers.Add)):
        sources = [_source(t) for t in add.input]
        branch = max(sources, key=lambda layer: order.get(id(layer), -1))
        if isinstance(branch, keras.layers.BatchNormalization) and branch.scale:
            branch.gamma.assign(keras.ops.zeros_like(branch.gamma))
            changed += 1
    return changed
