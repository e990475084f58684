"""The package check: does a model/ folder meet what ModelArts' import and deployment need
(the SavedModel, exactly one config.json and customize_service.py with valid contents, the
label map, the helper modules)? Returns the reasons it does not, one line each."""
import ast
import json
import os
import re
import sys

from . import gallery

SERVICE = "customize_service.py"
CONFIG = "config.json"
LABELS = "labels.json"
# config.json's fields in ModelArts' spec ("Specifications for Editing a Model Configuration
# File", and its apis table: url, method, request, response); anything else is refused.
CONFIG_FIELDS = {"model_algorithm", "model_type", "runtime", "metrics", "apis",
                 "dependencies", "health", "swr_location"}
API_FIELDS = {"url", "method", "request", "response"}
# Imported at the top of customize_service.py and found in every TensorFlow runtime image.
RUNTIME_MODULES = {"tensorflow", "numpy", "model_service"}
# Python modules as pip names them, for the dependencies list.
STDLIB_BEFORE_3_10 = {"argparse", "ast", "base64", "collections", "concurrent", "functools",
                      "io", "json", "logging", "math", "os", "queue", "re", "sys", "threading",
                      "time", "warnings"}
PIP_NAMES = {"PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python", "sklearn": "scikit-learn"}


def _files_named(root, name):
    return [os.path.relpath(os.path.join(d, name), root) for d, _, files in os.walk(root)
            if name in files]


def _load_json(path, problems):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        problems.append("{}: not valid JSON ({})".format(os.path.basename(path), exc))
        return None


def _check_saved_model(root, problems, signatures):
    """Tag `serve`, a `serving_default` signature taking one string tensor; returns the number
    of classes its output has (None when unknown) and adds the signature names to
    `signatures`."""
    pb = os.path.join(root, "saved_model.pb")
    if not os.path.isfile(pb):
        problems.append("saved_model.pb is missing: export the model again")
        return None
    variables = os.path.join(root, "variables")
    if not os.path.isfile(os.path.join(variables, "variables.index")):
        problems.append("variables/variables.index is missing: copy the whole variables/ "
                        "folder of the SavedModel")
    if not any(n.startswith("variables.data-") for n in (
            os.listdir(variables) if os.path.isdir(variables) else [])):
        problems.append("variables/variables.data-00000-of-00001 is missing: copy the whole "
                        "variables/ folder of the SavedModel")
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        problems.append("saved_model.pb cannot be read: {}".format(exc))
        return None
    graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        problems.append("saved_model.pb has no graph tagged 'serve'")
        return None
    signatures.extend(graphs[0].signature_def)
    signature = graphs[0].signature_def.get("serving_default")
    if signature is None:
        problems.append("the SavedModel has no 'serving_default' signature (it has {})".format(
            sorted(graphs[0].signature_def) or "none"))
        return None
    images = signature.inputs.get("images")
    if len(signature.inputs) != 1 or images is None or images.dtype != 7:  # DT_STRING
        problems.append("serving_default must take one string tensor 'images' (encoded "
                        "images, what customize_service.py sends); it takes {}".format(
                            sorted(signature.inputs)))
    output = signature.outputs.get("probabilities")
    if output is None or len(output.tensor_shape.dim) != 2:
        problems.append("serving_default must return 'probabilities' [batch, classes] (what "
                        "customize_service.py reads); it returns {}".format(
                            sorted(signature.outputs)))
        return None
    return output.tensor_shape.dim[1].size


def _check_apis(apis, problems):
    if not isinstance(apis, list) or len(apis) != 1:
        problems.append("config.json apis: exactly one API is allowed")
        return
    api = apis[0]
    if not isinstance(api, dict):
        problems.append("config.json apis: the API must be a JSON object")
        return
    for field in sorted(set(api) - API_FIELDS):
        problems.append("config.json apis: {!r} is not a field of the spec (it has {})".format(
            field, ", ".join(sorted(API_FIELDS))))
    if api.get("url") != "/" or str(api.get("method", "")).lower() != "post":
        problems.append("config.json apis: the API must be url '/' with method 'post'")
    request, response = api.get("request"), api.get("response")
    if not isinstance(request, dict) or not isinstance(response, dict):
        problems.append("config.json apis: 'request' and 'response' must be JSON objects")
        return
    if request.get("Content-type") != "multipart/form-data":
        problems.append("config.json apis: request Content-type must be multipart/form-data")
    images = request.get("data")
    for key in ("properties", "images"):
        images = images.get(key) if isinstance(images, dict) else None
    if not isinstance(images, dict) or images.get("type") != "file":
        problems.append("config.json apis: request data must have property 'images' of type "
                        "'file'")
    if response.get("Content-type") != "application/json":
        problems.append("config.json apis: response Content-type must be application/json")
    if not isinstance(response.get("data"), dict):
        problems.append("config.json apis: response data must be a JSON schema object")


def _check_dependencies(dependencies, problems):
    """Returns the pip package names listed (lower case)."""
    names = set()
    if not isinstance(dependencies, list):
        problems.append("config.json dependencies must be a list")
        return names
    for entry in dependencies:
        if not isinstance(entry, dict) or entry.get("installer") != "pip":
            problems.append("config.json dependencies: each entry needs installer 'pip'")
            continue
        packages = entry.get("packages")
        if not isinstance(packages, list):
            problems.append("config.json dependencies: 'packages' must be a list")
            continue
        for package in packages:
            if not isinstance(package, dict) or not package.get("package_name"):
                problems.append("config.json dependencies: a package without package_name")
                continue
            if package.get("restraint", "EXACT") not in ("EXACT", "ATLEAST", "ATMOST"):
                problems.append("config.json dependencies: {}: restraint must be EXACT, "
                                "ATLEAST or ATMOST".format(package["package_name"]))
            names.add(str(package["package_name"]).lower())
    return names


def check_config(config, problems):
    """The fields of config.json (MODELARTS.md §2); returns the pip names it installs."""
    if not isinstance(config, dict):
        problems.append("config.json must hold a JSON object")
        return set()
    for field in sorted(set(config) - CONFIG_FIELDS):
        where = (" (retrieval settings live in model/{} now: run retrieve.py package "
                 "again)".format(gallery.SETTINGS_FILE) if field == "retrieval" else "")
        problems.append("config.json: {!r} is not a field of ModelArts' spec{}".format(
            field, where))
    algorithm = config.get("model_algorithm")
    if not isinstance(algorithm, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,35}$",
                                                      algorithm):
        problems.append("config.json model_algorithm is required: letters first, at most 36 "
                        "characters (e.g. image_classification)")
    if config.get("model_type") != "TensorFlow":
        problems.append("config.json model_type must be 'TensorFlow'")
    if not isinstance(config.get("runtime"), str) or not config["runtime"]:
        problems.append("config.json runtime is not set: name the inference image")
    metrics = config.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
            isinstance(v, (int, float)) and 0 <= v <= 1 for v in metrics.values()):
        problems.append("config.json metrics must map names to numbers in 0..1")
    if "apis" in config:
        _check_apis(config["apis"], problems)
    return _check_dependencies(config.get("dependencies", []), problems)


def _check_retrieval(root, retrieval, signatures, problems):
    """A retrieval package: its gallery file is in model/ and readable (or it names a Milvus
    collection: milvus://HOST:PORT/COLLECTION, reached when the replies are checked), and the
    SavedModel can embed (what customize_service.py then calls)."""
    milvus = isinstance(retrieval, dict) and isinstance(retrieval.get("milvus"), str)
    if not isinstance(retrieval, dict) or not (milvus or isinstance(retrieval.get("index"), str)):
        problems.append("{} must be an object naming its 'index' file (e.g. gallery.h5) or "
                        "a 'milvus' collection: run retrieve.py package again".format(
                            gallery.SETTINGS_FILE))
        return
    top_k = retrieval.get("top_k", 10)
    if not isinstance(top_k, int) or top_k < 1:
        problems.append("{} top_k must be a whole number >= 1".format(gallery.SETTINGS_FILE))
    if signatures and "embed" not in signatures:
        problems.append("model/ asks for retrieval, but the SavedModel has no 'embed' "
                        "signature: export the model again, then run retrieve.py package")
    if milvus:
        if not retrieval["milvus"].startswith("milvus://") or "/" not in \
                retrieval["milvus"][len("milvus://"):].strip("/"):
            problems.append("{} milvus must be milvus://HOST:PORT/COLLECTION; got {!r}".format(
                gallery.SETTINGS_FILE, retrieval["milvus"]))
        return
    path = os.path.join(root, retrieval["index"])
    if not os.path.isfile(path):
        problems.append("the retrieval index {} is not in model/: run retrieve.py "
                        "package again".format(retrieval["index"]))
        return
    try:
        import h5py
    except ImportError:  # the content is checked where h5py is installed
        return
    try:
        with h5py.File(path, "r") as f:
            if "features" not in f or "names" not in f or len(f["names"]) != len(
                    f["features"]) or not len(f["names"]):
                problems.append("{} is not a feature base with features and names of one "
                                "length (retrieve.py index writes one)".format(
                                    retrieval["index"]))
    except (OSError, ValueError) as exc:
        problems.append("{} cannot be read as HDF5: {}".format(retrieval["index"], exc))


def _imports(path, package):
    """Dotted names the module at `path` imports when loaded: not inside functions, and not
    those guarded by `except ImportError` (optional). `package` resolves relative imports."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        tree = ast.parse(source, path, feature_version=(3, 7))
    except TypeError:  # Python 3.7 itself has no feature_version, and needs none
        tree = ast.parse(source, path)
    names = set()

    def visit(nodes, optional):
        for node in nodes:
            if isinstance(node, ast.Import) and not optional:
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not optional:
                parts = package.split(".") if package else []
                base = ".".join(parts[:len(parts) - node.level + 1] if node.level else [])
                base = ".".join(p for p in (base, node.module or "") if p)
                names.add(base)
                names.update(base + "." + a.name for a in node.names)
            elif isinstance(node, ast.Try):
                guarded = any(isinstance(h.type, ast.Name) and h.type.id in (
                    "ImportError", "ModuleNotFoundError") for h in node.handlers)
                visit(node.body, optional or guarded)
                for handler in node.handlers:
                    visit(handler.body, optional)
            elif isinstance(node, ast.If):
                visit(node.body, optional)
                visit(node.orelse, optional)
    visit(tree.body, False)
    return names


def _local_file(root, dotted):
    """The file of module `dotted` inside the package folder, or None."""
    path = os.path.join(root, *dotted.split("."))
    for candidate in (path + ".py", os.path.join(path, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _external_imports(root):
    """Top-level names of what customize_service.py, and the helper modules beside it that it
    loads, import from outside the folder."""
    todo, seen, external = [(os.path.join(root, SERVICE), "")], set(), set()
    while todo:
        path, package = todo.pop()
        for dotted in _imports(path, package):
            parts = dotted.split(".")
            if not _local_file(root, parts[0]):
                external.add(parts[0])
                continue
            for i in range(1, len(parts) + 1):  # a package's __init__ runs first
                name = ".".join(parts[:i])
                found = _local_file(root, name)
                if found and name not in seen:
                    seen.add(name)
                    todo.append((found, name if found.endswith("__init__.py")
                                 else name.rpartition(".")[0]))
    return external


def _check_service(root, installed, problems):
    try:
        imports = _external_imports(root)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append("{} cannot be read: {}".format(SERVICE, exc))
        return
    except SyntaxError as exc:
        problems.append("{} is not valid Python 3.7 (the runtimes' version): line {}: "
                        "{}".format(os.path.relpath(exc.filename, root), exc.lineno, exc.msg))
        return
    with open(os.path.join(root, SERVICE), encoding="utf-8") as f:
        if "TfServingBaseService" not in f.read():
            problems.append("{} defines no subclass of TfServingBaseService".format(SERVICE))
    stdlib = getattr(sys, "stdlib_module_names", None) or STDLIB_BEFORE_3_10
    for name in sorted(imports):
        if (name in stdlib or name in RUNTIME_MODULES
                or PIP_NAMES.get(name, name).lower() in installed):
            continue
        problems.append("{} (or a helper beside it) imports {!r}, which is neither beside it "
                        "nor in config.json's dependencies".format(SERVICE, name))


def check_package(model_dir):
    """Problems of the package in `model_dir`, one line each; [] when it passes."""
    if not os.path.isdir(model_dir):
        return ["{} is not a folder".format(model_dir)]
    problems = []
    if os.path.basename(os.path.normpath(model_dir)) != "model":
        problems.append("the folder must be named model/ (ModelArts imports <parent>/model); "
                        "it is named {!r}".format(os.path.basename(os.path.normpath(model_dir))))
    signatures = []
    classes = _check_saved_model(model_dir, problems, signatures)
    installed = set()
    for name in (CONFIG, SERVICE):
        found = _files_named(model_dir, name)
        if len(found) != 1:
            problems.append("model/ must hold exactly one {}; found {}".format(
                name, ", ".join(found) or "none"))
    if os.path.isfile(os.path.join(model_dir, CONFIG)):
        config = _load_json(os.path.join(model_dir, CONFIG), problems)
        if config is not None:
            installed = check_config(config, problems)
    if os.path.isfile(os.path.join(model_dir, gallery.SETTINGS_FILE)):
        retrieval = _load_json(os.path.join(model_dir, gallery.SETTINGS_FILE), problems)
        if retrieval is not None:
            _check_retrieval(model_dir, retrieval, signatures, problems)
    if os.path.isfile(os.path.join(model_dir, SERVICE)):
        _check_service(model_dir, installed, problems)
    labels_path = os.path.join(model_dir, LABELS)
    if not os.path.isfile(labels_path):
        problems.append("labels.json is missing (class id -> name)")
    else:
        labels = _load_json(labels_path, problems)
        if labels is not None and (not isinstance(labels, dict) or set(labels) != {
                str(i) for i in range(len(labels))}):
            problems.append("labels.json must map ids \"0\"..\"N-1\" to names")
        elif labels is not None and classes and classes > 0 and len(labels) != classes:
            problems.append("labels.json names {} classes but the model outputs {}".format(
                len(labels), classes))
    return problems


def _sample_images(count):
    """`count` small PNGs of different sizes: what a reply check posts."""
    import io

    import numpy as np
    from PIL import Image

    blobs = []
    for i in range(count):
        pixels = np.random.RandomState(i).randint(0, 256, (24 + 8 * i, 32, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        blobs.append(buffer.getvalue())
    return blobs


def reply_problems(reply, schema):
    """Where `reply` breaks the JSON schema `schema` (config.json's response data), one line
    each. The tuple form of `items` in ModelArts' examples is draft 7's, so draft 7 rules."""
    import jsonschema

    return ["the reply breaks config.json's response schema at {}: {}".format(
        "/".join(str(p) for p in error.absolute_path) or "the top", error.message)
        for error in jsonschema.Draft7Validator(schema).iter_errors(reply)]


def check_replies(model_dir):
    """Load the package's own customize_service.py, as ModelArts does, and hold its replies
    to one image and to two against the response schema config.json declares."""
    import importlib.util
    import io

    with open(os.path.join(model_dir, CONFIG), encoding="utf-8") as f:
        schema = json.load(f)["apis"][0]["response"]["data"]
    spec = importlib.util.spec_from_file_location("packaged_service",
                                                  os.path.join(model_dir, SERVICE))
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path  # the service puts its folder first: not this process's business
    service = module.ImageClassifierService("model", model_dir, background=False)
    service.wait_ready()
    problems = []
    for count in (1, 2):
        files = {"image_{}.png".format(i): io.BytesIO(blob)
                 for i, blob in enumerate(_sample_images(count))}
        reply = service.inference({"images": files})
        problems += ["{} file(s): {}".format(count, problem)
                     for problem in reply_problems(reply, schema)]
    return problems
