"""The SavedModel: bytes in, the same probabilities as the in-process model on the evaluation
pipeline, after a reload in a fresh TensorFlow function graph."""
import numpy as np
import tensorflow as tf

from export import saved_model
from inputs import layouts, pipeline
from models import build
from tests.images import digit_image, encode, write


def test_saved_model_on_bytes_equals_the_model_on_the_eval_pipeline(tmp_path):
    for i in range(6):
        image, _ = digit_image(i, 40 + 7 * i)  # several sizes: the letterbox does work
        write(tmp_path / "data" / f"c{i % 2}" / f"{i}.jpg", encode(image))
    write(tmp_path / "data" / "c0" / "wide.png", encode(digit_image(9, 30)[0].resize((60, 24)),
                                                        "PNG"))
    samples = layouts.read_index(str(tmp_path / "data")).samples
    model, _ = build.build_classifier("mobilenetv3small", 2, 32)
    expected = np.concatenate([model(x, training=False).numpy()
                               for x, _ in pipeline.eval_dataset(samples, 2, 4, 32)])

    saved_model.save(model, str(tmp_path / "model"), 32, "letterbox")
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    serve = loaded.signatures["serving_default"]
    data = tf.constant([open(s.path, "rb").read() for s in samples])
    got = serve(images=data)["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert set(loaded.signatures) == {"serving_default", "pixels"}
