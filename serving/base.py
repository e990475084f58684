"""A local stand-in for ModelArts' TfServingBaseService (model_service.tfserving_model_service,
which exists only inside ModelArts' inference images): the same constructor and the same
_preprocess -> _inference -> _postprocess pipeline, so customize_service.py runs anywhere."""


class TfServingBaseService(object):
    """Shape of ModelArts' base class: constructed as (model_name, model_path); `inference`
    runs the three steps and what _postprocess returns is the JSON reply."""

    def __init__(self, model_name, model_path):
        self.model_name = model_name
        self.model_path = model_path

    def _preprocess(self, data):
        return data

    def _inference(self, data):
        raise NotImplementedError("a service must override _inference")

    def _postprocess(self, data):
        return data

    def inference(self, data):
        return self._postprocess(self._inference(self._preprocess(data)))
