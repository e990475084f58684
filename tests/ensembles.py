"""Members for ensemble tests, made from the demo run's model without training again: its
best weights in a model of another input size (MobileNetV3's weights fit any size), and the
same model with its classes listed in another order (the last layer's columns permuted
alike, so it predicts exactly what the demo predicts, class by class)."""
import json
import os
import shutil

import numpy as np

DEMO_DATA = os.path.join("cache", "demo", "digits")  # under the demo fixture's root
RULE = "garbage_classify_rule.json"


def demo_model(demo_out, input_size):
    """The demo run's best weights in its classifier built at `input_size`; with the class
    names."""
    from evaluation import inference
    from inputs import label_map
    from models import build

    with open(os.path.join(demo_out, "run_config.json"), encoding="utf-8") as f:
        spec = json.load(f)["config"]["model"]
    names = label_map.load(os.path.join(demo_out, label_map.FILE_NAME))
    model, _ = build.build_classifier(spec["backbone"], len(names), input_size,
                                      spec["dropout"], spec["head"], spec["head_scale"],
                                      spec["pooling"], spec["embedding_dim"], spec["subcenters"])
    model.load_weights(inference.best_weights(os.path.join(demo_out, "weights")))
    return model, names


def resized_member(demo_out, folder, input_size=40, resize_mode="stretch"):
    """A package of the demo's weights at another input size and resize mode."""
    from export import package

    model, names = demo_model(demo_out, input_size)
    return package.build(model, names, input_size, resize_mode, None, "", str(folder))


def permuted_member(demo_out, folder, shift=3):
    """A package of the demo's model with class i listed at (i - shift) mod N; returns it and
    the permutation (new column j is the demo's class perm[j])."""
    from export import package

    model, names = demo_model(demo_out, 32)
    perm = np.roll(np.arange(len(names)), -shift)
    head = model.get_layer("probabilities")
    head.set_weights([w[..., perm] for w in head.get_weights()])
    return package.build(model, [names[j] for j in perm], 32, "letterbox", None, "",
                         str(folder)), perm


def labelled_subset(demo_root, folder, count=60):
    """`count` of the demo's labelled images (and its class rule) in `folder`."""
    source = os.path.join(demo_root, DEMO_DATA)
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(source, RULE), folder)
    for i in range(count):
        for ext in (".jpg", ".txt"):
            shutil.copy(os.path.join(source, f"img_{i}{ext}"), folder)
    return folder
