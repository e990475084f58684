"""Embeddings through a model package's `embed` signature: encoded bytes in (the same
bytes-to-tensor function as training and serving, inside the SavedModel), L2-normalised
pooled features out. Files are read by tf.data in parallel and embedded in batches; the
signature decodes a batch in parallel, on a GPU when there is one."""
import hashlib
import logging
import os

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from errors import UserError
from evaluation import inference
from export import ensemble
from serving import packages
from serving.gallery import TTA_SIGNATURES

log = logging.getLogger("retrieval")


class ModelError(UserError):
    """--model_dir cannot embed; the message says what to give instead."""


def find_package(model_dir, cache_root):
    """The local model package folder of --model_dir (a package, or a train_url holding
    model/; obs:// and s3:// are copied to the cache)."""
    folder = packages.package_in(inference.local_copy(model_dir, cache_root))
    if folder:
        return folder
    raise ModelError(f"--model_dir={model_dir} holds no model package (saved_model.pb): give "
                     "the model/ folder a training run wrote, or its train_url")


def weights_fingerprint(package):
    """sha1 of the package's variables (names and bytes): the same weights, the same print."""
    digest = hashlib.sha1()
    folder = os.path.join(package, "variables")
    for name in sorted(os.listdir(folder)):
        digest.update(name.encode())
        with open(os.path.join(folder, name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


class Embedder:
    """The embedding signature of one package for `tta` (none: `embed`; flip: `embed_flip`,
    the mean with the mirror image's; None: flip where the package has it), and what
    identifies the model and its use (`meta`)."""

    def __init__(self, package, tta="none"):
        if os.path.isfile(os.path.join(package, ensemble.FILE_NAME)):
            raise ModelError(f"{package} is an ensemble (train.py --mode=ensemble), which "
                             "serves classes only: embed with one of its members' packages "
                             f"(its {ensemble.FILE_NAME} lists them)")
        self._loaded = tf.saved_model.load(package)
        signatures = self._loaded.signatures
        if "embed" not in signatures or "info" not in signatures:
            raise ModelError(f"{package} has no embed signature: it was exported before "
                             "retrieval was added. Export it again (run its training job "
                             "again with --overwrite_model=true).")
        if tta is None:
            tta = "flip" if TTA_SIGNATURES["flip"] in signatures else "none"
            if tta == "none":
                log.warning("%s was exported before 0.7 and has no embed_flip signature: "
                            "embedding without flip TTA (export it again for it)", package)
        if tta == "crops" and TTA_SIGNATURES[tta] not in signatures:
            raise ModelError(f"{package} has no embed_crops signature: --embed_tta=crops "
                             "needs a package exported with train.py --tta=crops")
        if TTA_SIGNATURES[tta] not in signatures:
            raise ModelError(f"{package} has no {TTA_SIGNATURES[tta]} signature for "
                             f"--embed_tta={tta}: it was exported by an older version (flip "
                             "came in 0.7, multiscale in 0.8). Export it again "
                             "(its training job with --overwrite_model=true), or index with "
                             "--embed_tta=none")
        self._embed = signatures[TTA_SIGNATURES[tta]]
        info = {key: value.numpy() for key, value in signatures["info"]().items()}
        self.meta = {"fingerprint": weights_fingerprint(package),
                     "backbone": info["backbone"].decode(), "input_size": int(info["input_size"]),
                     "dim": int(info["dim"]), "embed_tta": tta}

    def embed(self, paths, batch_size=64, desc="embedding"):
        """(features float32 [len(paths), D], {position: reason} of images that failed; their
        rows are zero). A batch that fails is embedded image by image to find the culprit."""
        features = np.zeros((len(paths), self.meta["dim"]), np.float32)
        failed = {}
        files = (tf.data.Dataset.from_tensor_slices(tf.constant(list(paths), tf.string))
                 .map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
                 .batch(batch_size).prefetch(tf.data.AUTOTUNE))
        start = 0
        for batch in tqdm(files, total=-(-len(paths) // batch_size), unit="batch", desc=desc):
            try:
                features[start:start + len(batch)] = self._embed(images=batch)["embeddings"]
            except tf.errors.InvalidArgumentError:
                for j in range(len(batch)):
                    try:
                        features[start + j] = self._embed(images=batch[j:j + 1])["embeddings"]
                    except tf.errors.InvalidArgumentError as exc:
                        failed[start + j] = str(exc.message).splitlines()[0][:200]
            start += len(batch)
        return features, failed
