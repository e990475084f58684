"""The feature base: one HDF5 file (h5py) holding a gallery's embeddings.

Datasets: `features` [N, D] (float32, or float16 by flag; rows L2-normalised), `names`
(UTF-8 paths relative to the gallery, with /), `digests` (sha1 of each image's bytes: an
unchanged image is never embedded twice) and `labels` (class ids, -1 where unknown; the
names are in the `label_names` attribute). Attributes say which model made it: `fingerprint`
(of its weights), `backbone`, `input_size`, `dim`, `embed_tta` (how images were embedded;
queries follow the base), plus `created`, `format` and `version`
(this bundle's). A base indexed with --whiten also holds `whiten_mean` [D] and
`whiten_projection` [D, d] (retrieval/whiten.py): the features stay as embedded, so an
incremental index reuses them, and the base hands them out whitened (blocks, rows, prepare).

A base is written to `<path>.partial` and renamed into place when complete, so an
interrupted index leaves the previous base intact and a re-run reuses what the partial
file already holds. One writer at a time: `<path>.lock` (made with O_EXCL, which holds on
NFS too, where HDF5's own file locking is often off) refuses a second one.
"""
import contextlib
import json
import os
import socket
import time

import h5py
import numpy as np

from errors import UserError
from serving.gallery import read_whitening, whiten
from version import VERSION

FORMAT_VERSION = "1"
MODEL_KEYS = ("fingerprint", "backbone", "input_size", "dim", "embed_tta")
OLD_DEFAULTS = {"embed_tta": "none"}  # what bases made before the key existed hold
_TEXT = h5py.string_dtype("utf-8")


def _dataset_blocks(features, size):
    """(first row, float32 [n, D]) blocks of an HDF5 dataset, in order."""
    for first in range(0, features.shape[0], size):
        yield first, np.asarray(features[first:first + size], dtype=np.float32)


class BaseError(UserError):
    """A feature base that cannot be used as asked; the message says what to do."""


def _partial(path):
    return path + ".partial"


@contextlib.contextmanager
def writing(path):
    """Hold `<path>.lock` while a base is indexed: a second writer is refused with who holds
    it. A lock left by a process of this machine that no longer runs is taken over."""
    lock = path + ".lock"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder.get("host") == me["host"] and not _running(holder.get("pid")):
                os.remove(lock)  # its writer died (killed, out of memory): take over
                continue
            raise BaseError(
                f"another retrieve.py index is writing {path} (pid {holder.get('pid', '?')} "
                f"on {holder.get('host', '?')}, since "
                f"{time.strftime('%H:%M:%S', time.localtime(holder.get('since', 0)))}): wait "
                f"for it, or remove {lock} if that run is gone") from None
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    try:
        yield
    finally:
        os.remove(lock)


def _lock_holder(lock):
    try:
        with open(lock, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _running(pid):
    if not isinstance(pid, int):
        return True  # unknown: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FeatureBase:
    """An open feature base, read-only (Writer makes them)."""

    def __init__(self, path):
        try:
            self.file = h5py.File(path, "r")
        except (OSError, ValueError) as exc:
            raise BaseError(f"{path} is not a feature base (an HDF5 file) this tool can read: "
                            f"{exc}; make one with: python retrieve.py index") from None
        self.path = path
        if "features" not in self.file:
            self.file.close()
            raise BaseError(f"{path} has no features dataset: not a feature base; make one "
                            "with: python retrieve.py index")
        self.whitening = read_whitening(self.file)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.file.close()

    def __len__(self):
        return int(self.file["features"].shape[0])

    @property
    def meta(self):
        return {**OLD_DEFAULTS, **{key: (value.decode() if isinstance(value, bytes) else value)
                                   for key, value in self.file.attrs.items()}}

    @property
    def names(self):
        return self.file["names"].asstr()[:].tolist()

    @property
    def digests(self):
        return self.file["digests"].asstr()[:].tolist()

    @property
    def labels(self):
        return self.file["labels"][:]

    @property
    def label_names(self):
        return json.loads(self.file.attrs.get("label_names", "[]"))

    def prepare(self, features):
        """Query features as the base compares them: whitened like the gallery, if it is."""
        features = np.asarray(features, dtype=np.float32)
        return whiten(features, *self.whitening) if self.whitening else features

    def blocks(self, size=16384):
        """(first row, float32 [n, D]) blocks in order, as compared (whitened if the base is):
        a base larger than memory streams."""
        for first, block in _dataset_blocks(self.file["features"], size):
            yield first, self.prepare(block)

    def rows(self, indices):
        """float32 features of the rows `indices` (any shape) as compared, read in sorted
        order."""
        indices = np.asarray(indices)
        unique, inverse = np.unique(indices, return_inverse=True)
        found = self.prepare(self.file["features"][unique])
        return found[inverse].reshape(*indices.shape, -1)

    def check_model(self, model_meta):
        """Raise BaseError naming what differs when `model_meta` is not the base's model."""
        check_same_model(self.path, self.meta, model_meta)


def check_same_model(where, base_meta, model_meta):
    """Raise BaseError naming what differs when the base at `where` (its `base_meta`) was
    not made by the model and embedding of `model_meta`."""
    differs = [f"{key} {base_meta.get(key)!r} in the base, {model_meta.get(key)!r} in the "
               "model" for key in MODEL_KEYS if str(base_meta.get(key)) != str(model_meta.get(key))]
    if differs:
        raise BaseError(f"{where} was made by another model or embedding "
                        f"({'; '.join(differs)}): its features cannot be compared with "
                        "these. Rebuild it: python retrieve.py index --rebuild=true ...")


def open_base(path):
    if not os.path.exists(path):
        raise BaseError(f"{path} does not exist: make it with python retrieve.py index")
    return FeatureBase(path)


class Writer:
    """Appends rows to `<path>.partial`; `commit()` renames it to `path`."""

    def __init__(self, path, model_meta, label_names=(), float16=False):
        self.path, self.partial = path, _partial(path)
        with h5py.File(self.partial, "w") as f:
            dim = int(model_meta["dim"])
            f.create_dataset("features", (0, dim), maxshape=(None, dim),
                             dtype=np.float16 if float16 else np.float32,
                             chunks=(min(1024, max(1, 2 ** 22 // (dim * 4))), dim))
            for name, dtype in (("names", _TEXT), ("digests", _TEXT), ("labels", np.int64)):
                f.create_dataset(name, (0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
            for key in MODEL_KEYS:
                f.attrs[key] = str(model_meta[key])
            f.attrs["label_names"] = json.dumps(list(label_names), ensure_ascii=False)
            f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            f.attrs["format"] = FORMAT_VERSION
            f.attrs["version"] = VERSION
        self.file = h5py.File(self.partial, "a")

    def append(self, features, names, digests, labels):
        """Add rows; flushed at once, so an interruption loses at most this call."""
        count = len(names)
        if not count:
            return
        start = self.file["features"].shape[0]
        for name, values in (("features", features), ("names", names), ("digests", digests),
                             ("labels", labels)):
            data = self.file[name]
            data.resize(start + count, axis=0)
            data[start:] = values
        self.file.flush()

    def raw_blocks(self, size=16384):
        """(first row, float32 [n, D]) blocks of what was appended so far, as embedded."""
        return _dataset_blocks(self.file["features"], size)

    def set_whitening(self, mean, projection, power):
        """Store a learnt whitening (retrieval/whiten.py); searches then whiten both sides."""
        self.file.create_dataset("whiten_mean", data=mean)
        self.file.create_dataset("whiten_projection", data=projection)
        self.file.attrs["whiten_power"] = float(power)

    def commit(self):
        self.file.close()
        os.replace(self.partial, self.path)

    def close(self):
        if self.file.id.valid:
            self.file.close()


def reusable_rows(path, model_meta):
    """{(name, digest): features} already embedded by this model, from the base at `path`
    and from an interrupted run's partial file. A base of another model raises; a partial
    file of another model, or cut short before its first flush, is passed over."""
    rows = {}
    for candidate in (path, _partial(path)):
        if not os.path.exists(candidate):
            continue
        try:
            base = FeatureBase(candidate)
            try:
                base.check_model(model_meta)
                keys, features = list(zip(base.names, base.digests)), base.file["features"][:]
            finally:
                base.close()
        except BaseError:
            if candidate == path:
                raise
            continue  # a partial file of another model, or cut short before its first flush
        rows.update(zip(keys, features))
    return rows
