"""The platform's Flask app (stand-in): POST / runs the service, GET /health answers OK.
Python 3.7 syntax, as the platform's runtime."""
import argparse
import collections
import inspect
import io
import json
import logging
import sys
import traceback

from flask import Flask, request

from model_service import load_service
from model_service.tfserving_model_service import TfServingBaseService

log = logging.getLogger("app")
app = Flask("modelarts-stand-in")
FAILED = {"erno": "MR.0105", "msg": "Recognition failed", "words_result": {}}
INVALID = {"erno": "MR.0101", "msg": "The input parameter is invalid", "words_result": {}}
JSON = {"Content-Type": "application/json"}
service = None


@app.route("/health", methods=["GET"])
def health():
    return '{"status": "OK"}'


@app.route("/", methods=["POST"])
def infer():
    body = request.get_json(silent=True)  # old Flask's request.json: None unless JSON
    if body:
        data = body
    elif request.form or request.files:
        data = {key: value for key, value in request.form.items()}
        for key in request.files:
            files = collections.OrderedDict()
            for upload in request.files.getlist(key):
                files[upload.filename] = io.BytesIO(upload.stream.read())  # same name: one
            data[key] = files
    else:
        return json.dumps(INVALID), 400, JSON
    for key, value in request.args.items():
        data[key] = value
    try:
        return json.dumps(service.inference(data), ensure_ascii=False), 200, JSON
    except (KeyError, TypeError):
        log.error("Algorithm crashed!\n%s", traceback.format_exc())
        return json.dumps(FAILED), 400, JSON
    except Exception:  # noqa: BLE001 - the platform's rule: anything else is a 500
        log.error("Algorithm crashed!\n%s", traceback.format_exc())
        return json.dumps(FAILED), 500, JSON


def pick_service(module):
    """The one TfServingBaseService subclass that has no subclasses of its own."""
    classes = [member for _, member in inspect.getmembers(module, inspect.isclass)]
    found = [c for c in classes if issubclass(c, TfServingBaseService) and
             not c.__subclasses__()]
    if len(found) != 1:
        raise SystemExit("there should be one user defined service derived from "
                         "TfServingBaseService; found {}".format(found))
    return found[0]


def main(argv=None):
    global service
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", default="/home/mind/model/1")
    parser.add_argument("--model_name", default="serve")
    parser.add_argument("--service_file", required=True)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    service = pick_service(load_service(args.service_file))(args.model_name, args.model_path)
    app.run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
