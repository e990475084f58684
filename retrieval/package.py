"""retrieve.py package: put a feature base into a model package, so that the deployed service
answers with the nearest gallery images."""
import json
import os
import shutil

import obs_utils
from errors import UserError
from export import package as export_package
from serving import check
from serving import gallery as served_gallery

from . import base, milvus
from .embed import Embedder, find_package
from .stage import _local_base

GALLERY_FILE = "gallery.h5"
_NEIGHBORS = {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                        "items": [{"type": "string"}, {"type": "number"}]}}
NEIGHBORS_RESPONSE = {  # config.json's reply schema for a retrieval package: one file, several
    "Content-type": "application/json",
    "data": {"type": "object", "properties": {
        "result": {"type": "string"},
        "neighbors": _NEIGHBORS,
        "results": {"type": "array", "items": {
            "type": "object", "required": ["file", "result", "neighbors"],
            "properties": {"file": {"type": "string"}, "result": {"type": "string"},
                           "neighbors": _NEIGHBORS}}}}}}


# A served Milvus gallery needs the client where the service runs (pymilvus 2.3 is the last
# for Python 3.7, the platform's TensorFlow 2.6 runtime).
MILVUS_DEPENDENCY = {"package_name": "pymilvus", "package_version": "2.3.0",
                     "restraint": "ATLEAST"}


def _base_to_serve(run, folder, cache_root):
    """(the settings retrieval.json gets, the HDF5 file to copy in or None) for --index_url,
    checked against the package's model."""
    if not milvus.is_milvus(run.index_url):
        path = _local_base(run.index_url, cache_root)
        with base.open_base(path) as fb:
            embedder = Embedder(folder, fb.meta["embed_tta"])
            fb.check_model(embedder.meta)
            images = len(fb)
        settings = {"index": GALLERY_FILE}
    else:
        if not run.index_url.startswith(milvus.SCHEME):
            raise UserError(f"{run.index_url} is a milvus-lite folder on this machine, which "
                            "the deployed service cannot reach: serve a collection on a Milvus "
                            "server (--index_url=milvus://HOST:PORT/COLLECTION) or a .h5 base")
        path = None
        with milvus.open_base(run.index_url) as collection:
            embedder = Embedder(folder, collection.meta["embed_tta"])
            collection.check_model(embedder.meta)
            images = len(collection)
            settings = {"milvus": run.index_url,
                        "search_params": milvus.INDEXES[collection.kind][2]}
    settings.update(top_k=run.top_k, images=images, fingerprint=embedder.meta["fingerprint"],
                    embed_tta=embedder.meta["embed_tta"])
    return settings, path


def package(run, cache_root):
    """retrieve.py package: put the base at --index_url into the model package (an HDF5 base
    copied in; a Milvus collection named, searched by the service per request), record it in
    its config.json and bring its customize_service.py and serving/ up to date, so the
    deployed service answers with the nearest gallery images. A package already serving a
    gallery is changed only with --overwrite."""
    folder = find_package(run.model_dir, cache_root)
    settings, path = _base_to_serve(run, folder, cache_root)
    config_path = os.path.join(folder, check.CONFIG)
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    serving_now = served_gallery.settings(folder) or config.get("retrieval")  # or an old one
    if serving_now and not run.overwrite:
        raise UserError(f"{run.model_dir} already serves a gallery "
                        f"({serving_now.get('images')} images); pass --overwrite=true "
                        "to replace it")
    gallery_file = os.path.join(folder, GALLERY_FILE)
    if path:
        shutil.copyfile(path, gallery_file)
    elif os.path.exists(gallery_file):
        os.remove(gallery_file)  # what the package served before (--overwrite)
    export_package.copy_service(folder)  # a service that knows galleries
    settings_path = os.path.join(folder, served_gallery.SETTINGS_FILE)
    with open(settings_path, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    config.pop("retrieval", None)  # where packages before 0.5 kept it: not a spec field
    config["model_algorithm"] = "image_retrieval"
    config["apis"][0]["response"] = NEIGHBORS_RESPONSE
    packages = config.setdefault("dependencies", [{"installer": "pip", "packages": []}])[0][
        "packages"]
    packages[:] = [p for p in packages if p.get("package_name") != "pymilvus"]
    if not path:
        packages.append(MILVUS_DEPENDENCY)
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    problems = check.check_package(folder) or check.check_replies(folder)
    if problems:
        raise ValueError("the package fails the check after adding the gallery: "
                         + "; ".join(problems))
    if obs_utils.is_remote(run.model_dir):  # the gallery first: retrieval.json switches it on
        remote = run.model_dir
        if not obs_utils.exists(obs_utils.join(remote, "saved_model.pb")):
            remote = obs_utils.join(remote, "model")
        if path:
            obs_utils.copy(gallery_file, obs_utils.join(remote, GALLERY_FILE))
        for name in export_package.SERVICE_FILES:
            if os.path.isdir(os.path.join(folder, name)):
                obs_utils.copy_tree(os.path.join(folder, name), obs_utils.join(remote, name),
                                    progress=False)
            else:
                obs_utils.copy(os.path.join(folder, name), obs_utils.join(remote, name))
        obs_utils.copy(settings_path, obs_utils.join(remote, served_gallery.SETTINGS_FILE))
        obs_utils.copy(config_path, obs_utils.join(remote, check.CONFIG))
    where = f"gallery images in {run.index_url}" if not path else "gallery images"
    return (f"{run.model_dir} now serves the {run.top_k} nearest of {settings['images']} "
            f"{where} (check: OK); try it: python customize_service.py --model_dir {folder}")
