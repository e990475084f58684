"""The errors a request can meet: bad input (a 4xx with a JSON message), and a model that is
not loaded yet (503)."""


class BadRequest(ValueError, TypeError):
    """Input the service refuses: `status` is the HTTP code the local server answers with
    (400 bad request, 401 token, 413 too large, 415 not an image). It is a TypeError too:
    ModelArts' own framework answers 400 only to a KeyError or TypeError (500 to the rest)."""

    def __init__(self, message, status=400, position=None):
        super(BadRequest, self).__init__(message)
        self.status = status
        self.position = position  # which image of the request, where that is known


class NotReady(RuntimeError):
    """The model is still loading (or failed to load): not the client's fault, so a 5xx."""

    status = 503
