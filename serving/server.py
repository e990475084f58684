"""The local HTTP server: ModelArts' request and reply on your own machine.

    POST /        multipart/form-data, field `images` (curl -F images=@x.jpg) -> the reply JSON
    GET  /health  {"status": "ok", ...}; 503 with "loading" or "failed" until the model is up

werkzeug parses the requests (multipart, size limit) and waitress serves them with a thread
pool; every error is a JSON {"error": "..."} with a 4xx, or a 500 that names no internals."""
import hmac
import json
import logging
import time

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from .errors import BadRequest, NotReady
from .images import MAX_BODY_BYTES

log = logging.getLogger("serving")


def _json(body, status=200):
    return Response(json.dumps(body, ensure_ascii=False), status=status,
                    mimetype="application/json")


def _request_data(request, field="images"):
    """werkzeug's parsed files -> ModelArts' {field: {file name: file}} (every field, so a
    wrong field name is reported by the service with what came instead). Two files with the
    same name are both kept: the second is renamed "name (2)"."""
    data = {}
    for key, upload in request.files.items(multi=True):
        files = data.setdefault(key, {})
        name = upload.filename or key
        unique, n = name, 1
        while unique in files:
            n += 1
            unique = "{} ({})".format(name, n)
        files[unique] = upload.stream
    for key in request.form:
        data.setdefault(key, "(a text value, not a file)")
    return data


class App(object):
    """The WSGI application around a service (customize_service.ImageClassifierService);
    each request is logged in one line (method, path, status, images, milliseconds) unless
    `quiet`."""

    def __init__(self, service, token=None, max_body=MAX_BODY_BYTES, quiet=False):
        self.service, self.token, self.max_body = service, token, max_body
        self.quiet = quiet

    def __call__(self, environ, start_response):
        started = time.time()
        request = Request(environ)
        request.max_content_length = self.max_body
        request.max_form_memory_size = self.max_body
        request.images = 0  # counted once the body is parsed
        response = self.respond(request)
        if not self.quiet:
            log.info("%s %s %d, %d image%s, %.0f ms", request.method, request.path,
                     response.status_code, request.images,
                     "" if request.images == 1 else "s", 1000 * (time.time() - started))
        return response(environ, start_response)

    def respond(self, request):
        """The response to `request`: the reply, or a JSON error with its status."""
        try:
            response = self.dispatch(request)
        except (BadRequest, NotReady) as exc:
            response = _json({"error": str(exc)}, exc.status)
        except HTTPException as exc:  # werkzeug's own: too large, bad multipart, ...
            response = _json({"error": "{}: {}".format(exc.name, exc.description)}, exc.code)
        except Exception:  # noqa: BLE001 - logged here; the client gets no internals
            log.exception("request failed")
            response = _json({"error": "internal error while predicting; see the server "
                                       "log"}, 500)
        return response

    def authorised(self, request):
        if self.token is None:
            return True
        given = request.headers.get("X-Auth-Token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def dispatch(self, request):
        if request.path == "/health":
            if request.method != "GET":
                return _json({"error": "use GET /health"}, 405)
            # A health check without the token learns whether the server is ready, nothing
            # more: the model, its classes and the counters need the token. Not ready (the
            # model loading, or failed to) is a 503, so load balancers wait.
            health = self.service.health()
            status = 200 if health["status"] == "ok" else 503
            return _json(health if self.authorised(request) else {"status": health["status"]},
                         status)
        if request.path != "/":
            return _json({"error": "no such path {!r}: POST images to /".format(
                request.path)}, 404)
        if request.method != "POST":
            return _json({"error": "use POST / with multipart field 'images' "
                                   "(curl -F images=@x.jpg ...)"}, 405)
        if not self.authorised(request):
            return _json({"error": "missing or wrong X-Auth-Token header"}, 401)
        if request.content_length is not None and request.content_length > self.max_body:
            raise BadRequest("the request is {:.1f} MB, over the {} MB limit".format(
                request.content_length / 2 ** 20, self.max_body // 2 ** 20), status=413)
        if not request.mimetype.startswith("multipart/form-data"):
            raise BadRequest("expected a multipart/form-data body with field 'images' "
                             "(curl -F images=@x.jpg ...), got {!r}".format(
                                 request.mimetype or "no body"), status=415)
        data = _request_data(request)
        request.images = sum(len(files) for files in data.values() if isinstance(files, dict))
        if not data and (request.content_length or 0) > 0:
            raise BadRequest("the multipart body could not be parsed (a missing or wrong "
                             "boundary?): send it as curl -F images=@x.jpg does")
        return _json(self.service.inference(data))


# waitress reads a whole request before the application sees it, so idle or slow clients are
# bounded here: idle connections are closed after CHANNEL_TIMEOUT seconds (waitress: 120),
# checked every few seconds, and there is room for many connections beside the threads that
# serve (waitress: 100 in all, after which /health itself waits). A body over the app's
# limit (plus room for the multipart framing) is refused from its Content-Length.
CHANNEL_TIMEOUT = 20
CONNECTION_LIMIT = 1000


def serve(app, host="127.0.0.1", port=8080, threads=32):
    """Serve until interrupted (then say so). Threads bound the requests in progress, and so
    the batch."""
    import waitress

    log.info("listening on http://%s:%d/ (POST / with field 'images'; GET /health says when "
             "the model is ready)%s", host, port, "; requests not logged (--quiet)"
             if app.quiet else "")
    try:
        waitress.serve(app, host=host, port=port, threads=threads, ident="modelarts-classifier",
                       max_request_body_size=app.max_body + 2 ** 20,
                       channel_timeout=CHANNEL_TIMEOUT, cleanup_interval=5,
                       connection_limit=max(CONNECTION_LIMIT, 8 * threads), _quiet=True)
    except KeyboardInterrupt:
        pass
    log.info("stopped serving on http://%s:%d/", host, port)
