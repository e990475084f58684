"""The one error a request can cause: bad input, answered with a 4xx and a JSON message."""


class BadRequest(ValueError):
    """Input the service refuses: `status` is the HTTP code the local server answers with
    (400 bad request, 401 token, 413 too large, 415 not an image)."""

    def __init__(self, message, status=400, position=None):
        super(BadRequest, self).__init__(message)
        self.status = status
        self.position = position  # which image of the request, where that is known
