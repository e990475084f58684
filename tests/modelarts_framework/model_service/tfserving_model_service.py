"""The base class the platform gives TensorFlow services (stand-in).

Its __init__ reads the SavedModel's signature (the only one, else serving_default) and opens a
gRPC channel to a TF Serving process serving the same folder; `inference` runs _preprocess ->
_inference -> _postprocess and logs the time of each."""
import logging
import time

log = logging.getLogger("model_service")


class TfServingBaseService(object):
    def __init__(self, model_name, model_path):
        import tensorflow as tf
        from tensorflow.python.tools import saved_model_cli

        self.model_name, self.model_path = model_name, model_path
        signatures = saved_model_cli.get_signature_def_map(
            model_path, tf.saved_model.SERVING)
        self.model_signature = (list(signatures)[0] if len(signatures) == 1
                                else "serving_default")
        self.stub = None  # the platform's gRPC stub to TF Serving: no TF Serving runs here

    def inference(self, data):
        started = time.time()
        data = self._preprocess(data)
        inferred = time.time()
        data = self._inference(data)
        posted = time.time()
        data = self._postprocess(data)
        log.info("preprocess %.1f ms, infer %.1f ms, postprocess %.1f ms",
                 (inferred - started) * 1000, (posted - inferred) * 1000,
                 (time.time() - posted) * 1000)
        return data

    def _preprocess(self, data):
        return data

    def _inference(self, data):
        raise RuntimeError("the base class predicts through TF Serving, which this stand-in "
                           "does not run")

    def _postprocess(self, data):
        return data
