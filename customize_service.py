"""The deployed predictor, as ModelArts runs it, and the same predictor on your machine.

ModelArts imports this file from model/ and builds ImageClassifierService(model_name,
model_path) once (the model loads in a thread); each request is {"images": {"<file name>":
<file>}} (any one field name is taken). A retrieval package (`retrieve.py package` put a
gallery and retrieval.json in it) answers with the nearest gallery images instead of classes. Run directly:

    python customize_service.py --model_dir outputs/demo/model            # serve on 127.0.0.1:8080
    curl -F images=@x.jpg http://127.0.0.1:8080/
    python customize_service.py --check outputs/demo/model                # check a package

Kept to Python 3.7 syntax, importing only TensorFlow, numpy, Pillow and serving/ (copied beside
it) when loaded; the local server's werkzeug and waitress are imported only when it starts.
"""
import argparse
import json
import logging
import os
import re
import sys
import threading

HERE = os.path.dirname(os.path.realpath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # serving/ lies beside this file, in the repository and in model/

import numpy as np  # noqa: E402

from serving import gallery, images, levels, packages  # noqa: E402
from serving.errors import BadRequest, NotReady  # noqa: E402

try:
    from model_service.tfserving_model_service import TfServingBaseService
except ImportError:  # outside ModelArts' inference images
    from serving.base import TfServingBaseService

log = logging.getLogger("serving")
TOP_K = 5
# An InvalidArgumentError the input caused: it names a decoding node (DecodeJpeg,
# DecodeImage, ExtractJpegShape, ...). Any other is a bug in the graph, and a 500.
DECODE_FAILED = re.compile(r"node [^}\s]*(Decode\w*|ExtractJpegShape)\b")
LOAD_WAIT_S = 120  # how long a request waits for the model to finish loading


def load_labels(model_path):
    """labels.json (written by the export beside the SavedModel): id -> name, as a list."""
    with open(os.path.join(model_path, "labels.json"), encoding="utf-8") as f:
        mapping = json.load(f)
    return [mapping[str(i)] for i in range(len(mapping))]


class ImageClassifierService(TfServingBaseService):
    """Encoded images in, the top-5 classes out. The SavedModel's serving_default signature
    decodes, resizes and normalises inside the graph, with the function training used."""

    def __init__(self, model_name, model_path, background=True):
        # The platform's own __init__ is not called: it opens a gRPC channel to a TF Serving
        # process, and ours loads the SavedModel itself. The load runs in a thread, as the
        # manual advises (start-up must not time out); requests wait for it.
        self.model_name, self.model_path = model_name, model_path
        self.batcher = None  # the local server sets a serving.batcher.Batcher
        self.load_error = None
        self._loaded = threading.Event()
        if background:
            threading.Thread(target=self._load, name="load-model", daemon=True).start()
        else:
            self._load()

    def _load(self):
        try:
            import tensorflow as tf

            self.model = tf.saved_model.load(self.model_path)
            self.class_names = load_labels(self.model_path)
            self.levels = levels.load(self.model_path, self.class_names)
            retrieval = gallery.settings(self.model_path)
            if retrieval:  # embeddings out, then the gallery's nearest images
                self.gallery = gallery.open_gallery(self.model_path, retrieval)
                self.top_k = int(retrieval.get("top_k", 10))
                self.signature = self.model.signatures[
                    gallery.TTA_SIGNATURES[retrieval.get("embed_tta", "none")]]
                self.output = "embeddings"
            else:
                self.gallery = None
                self.signature = self.model.signatures["serving_default"]
                self.output = "probabilities"
            log.info("the model in %s is loaded, %s: ready to serve", self.model_path,
                     "a gallery of {} images".format(len(self.gallery)) if self.gallery is not None
                     else "{} classes".format(len(self.class_names)))
        except Exception as exc:  # noqa: BLE001 - kept, logged, and named in every reply
            log.exception("the model in %s could not be loaded", self.model_path)
            self.load_error = "{}: {}".format(type(exc).__name__, exc)
        finally:
            self._loaded.set()

    def wait_ready(self, timeout=LOAD_WAIT_S):
        """Block until the model is loaded; NotReady if it is still loading or failed."""
        if not self._loaded.wait(timeout):
            raise NotReady("the model is still loading; try again in a minute")
        if self.load_error:
            raise NotReady("the model failed to load ({}); see the service log".format(
                self.load_error))

    def predict(self, blobs):
        """Encoded image bytes [n] -> probabilities, numpy [n, classes] (a retrieval package:
        embeddings [n, D])."""
        import tensorflow as tf

        self.wait_ready()
        try:
            outputs = self.signature(images=tf.constant(blobs, dtype=tf.string))
        except tf.errors.InvalidArgumentError as exc:
            if not DECODE_FAILED.search(exc.message or ""):
                raise  # not the input's doing: a 500, with the traceback in the log
            raise BadRequest("an image could not be decoded: it is cut short or corrupt") \
                from None
        return outputs[self.output].numpy()

    def inference(self, data):
        """The platform's entry point (its base class runs the three steps): a refused request
        is logged here with its reason, since the platform's reply carries only a code."""
        try:
            return super(ImageClassifierService, self).inference(data)
        except BadRequest as exc:
            log.warning("request refused (%d): %s", exc.status, exc)
            raise

    def _preprocess(self, data):
        return images.files_of(data)

    def _inference(self, data):
        blobs = [content for _, content in data]
        run = self.batcher.submit if self.batcher is not None else self.predict
        try:
            probabilities = run(blobs)
        except BadRequest as exc:
            if exc.position is not None:  # the batcher found which image it was
                raise BadRequest("file {!r} could not be decoded: it is cut short or "
                                 "corrupt".format(data[exc.position][0])) from None
            for name, content in data:  # name the file (rare: headers were checked)
                try:
                    self.predict([content])
                except BadRequest:
                    raise BadRequest("file {!r} could not be decoded: it is cut short or "
                                     "corrupt".format(name)) from None
            raise
        return [(name, p) for (name, _), p in zip(data, probabilities)]

    def reply(self, probabilities):
        """One file's answer: the top class (`result` is what the 2019 contest scored) and the
        top-5 [name, probability] pairs, and with levels.json each coarser level's most
        probable name ("levels"); from a retrieval package, the nearest gallery image and the
        top-k [gallery image, cosine similarity] pairs."""
        if self.gallery is not None:
            neighbors = self.gallery.nearest(probabilities[np.newaxis], self.top_k)[0]
            return {"result": neighbors[0][0], "neighbors": neighbors}
        order = np.argsort(-probabilities, kind="stable")[:TOP_K]
        best = self.class_names[order[0]]
        answer = {"result": best, "predicted_label": best,
                  "scores": [[self.class_names[i], float(probabilities[i])] for i in order]}
        for names, of_class in self.levels:  # coarsest first: its classes' probabilities summed
            summed = np.bincount(of_class, weights=probabilities, minlength=len(names))
            answer.setdefault("levels", []).append(names[int(np.argmax(summed))])
        return answer

    def _postprocess(self, data):
        """One file: its answer. Several: {"results": [its answer with "file", ...]}, in
        request order. Both are one JSON object, as config.json's response schema says."""
        if len(data) == 1:
            return self.reply(data[0][1])
        results = []
        for name, probabilities in data:
            result = {"file": name}
            result.update(self.reply(probabilities))
            results.append(result)
        return {"results": results}

    def health(self):
        if not self._loaded.is_set():
            return {"status": "loading", "model": self.model_name}
        if self.load_error:
            return {"status": "failed", "model": self.model_name, "error": self.load_error}
        status = {"status": "ok", "model": self.model_name, "classes": len(self.class_names)}
        if self.gallery is not None:
            status["gallery"] = len(self.gallery)
        if self.batcher is not None:
            status.update(batches=self.batcher.batches, images=self.batcher.images)
        return status


def local_package(given, cache_root=""):
    """(the local package folder of --model_dir, None), or (None, what is wrong). It takes a
    package or a train_url holding model/, local or (from a repository checkout, which has
    obs_utils) obs:// and s3://, copied to the cache first (`cache_root`, empty: the default
    one), as train.py and retrieve.py do."""
    folder = given
    if "://" in given:
        try:
            import obs_utils
            from evaluation import inference
            from inputs import fetch
        except ImportError:
            return None, ("--model_dir={}: a remote package is served from a repository "
                          "checkout (it has obs_utils), not from a package's own copy of this "
                          "file; copy the package down first".format(given))
        try:
            folder = inference.local_copy(given, fetch.resolve_cache_root(cache_root))
        except (obs_utils.ObsError, OSError) as exc:
            return None, "--model_dir={}: {}".format(given, exc)
    found = packages.package_in(folder)
    if found:
        return found, None
    return None, ("--model_dir={} holds no model package (saved_model.pb): give the model/ "
                  "folder train.py wrote, or its train_url".format(given))


class _Parser(argparse.ArgumentParser):
    """One line for a bad flag (the flag, the value, the choices), not the usage block.
    (cli.ArgumentParser's twin: this file travels in the package, without cli.py.)"""

    def error(self, message):
        self.exit(2, "{}: {}; see {} --help\n".format(self.prog, message, self.prog))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each default said once: not again where the help text says it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "default" in text else super(_HelpFormatter, self)._get_help_string(action)


def build_parser():
    parser = _Parser(
        description="Serve a model package over HTTP (ModelArts' request and reply), or "
                    "check one.", formatter_class=_HelpFormatter,
        allow_abbrev=False)
    parser.add_argument("--model_dir", default=HERE,
                        help="the model/ folder (SavedModel, labels.json), or the train_url "
                             "holding it; obs:// and s3:// are copied to the cache first")
    parser.add_argument("--check", metavar="MODEL_DIR", default=None,
                        help="check a package against ModelArts' rules and exit")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    parser.add_argument("--port", type=int, default=8080, help="the port to listen on")
    parser.add_argument("--threads", type=int, default=32, help="requests served at once")
    parser.add_argument("--max_batch", type=int, default=32,
                        help="images of concurrent requests run together (1 = no batching)")
    parser.add_argument("--max_wait_ms", type=float, default=5.0,
                        help="how long a batch waits for more requests")
    parser.add_argument("--quiet", action="store_true",
                        help="no log line per request (errors are still logged)")
    parser.add_argument("--token", default=os.environ.get("SERVICE_AUTH_TOKEN") or None,
                        help="require this X-Auth-Token header (default: $SERVICE_AUTH_TOKEN, "
                             "else no check)")
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter, not our log
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    try:
        from cli import import_tensorflow  # a checkout: TensorFlow loads without its banner
    except ImportError:  # a package's own copy (no cli.py beside it): TensorFlow as it comes
        pass
    else:
        import_tensorflow()
    from serving import check

    if args.check:
        problems = check.check_package(args.check)
        problems = problems or check.check_replies(args.check)
        for problem in problems:
            print("FAIL: {}".format(problem))
        print("{}: {}".format(args.check, "{} problem(s)".format(len(problems)) if problems
                              else "OK, a valid ModelArts model package"))
        return 1 if problems else 0
    if args.token is not None and not args.token.strip():
        log.error("--token is empty: pass a token, or leave --token out (and "
                  "SERVICE_AUTH_TOKEN unset) to serve without one")
        return 2
    if args.token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without a token: anyone who reaches this address can "
                    "use the model; pass --token (or set SERVICE_AUTH_TOKEN)", args.host)
    model_dir, problem = local_package(args.model_dir)
    if problem:
        log.error("%s", problem)
        return 2
    for problem in check.check_package(model_dir):
        log.warning("package check: %s (ModelArts may refuse this package)", problem)
    from serving.batcher import Batcher
    from serving.server import App, serve

    service = ImageClassifierService(os.path.basename(os.path.normpath(model_dir)), model_dir)
    if args.max_batch > 1:
        service.batcher = Batcher(service.predict, args.max_batch, args.max_wait_ms / 1000.0)
    serve(App(service, token=args.token, quiet=args.quiet), args.host, args.port, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
