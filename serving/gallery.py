"""A retrieval package's gallery: the feature base (HDF5, written by retrieve.py) that
`retrieve.py package` put inside model/, searched exactly in memory; or the Milvus collection
retrieval.json names, searched per request. Python 3.7 syntax."""
import json
import os

import numpy as np

# model/retrieval.json: {"index": "gallery.h5", "top_k": 10, ...}. Its own file: config.json
# holds only the fields of ModelArts' spec.
SETTINGS_FILE = "retrieval.json"
# retrieval.json's "embed_tta" (the base's, which --embed_tta set at index) -> the SavedModel
# signature that embeds queries the same way
TTA_SIGNATURES = {"none": "embed", "flip": "embed_flip", "multiscale": "embed_multiscale",
                  "crops": "embed_crops"}


def settings(model_dir):
    """The package's retrieval settings, or None for a classifier package."""
    path = os.path.join(model_dir, SETTINGS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def best_k(scores, indices, k):
    """Per row, the k highest scores with their indices, sorted; ties rank the lower index
    first, so every search (retrieve.py's, the server's) orders results alike."""
    k = min(k, scores.shape[1])
    part = None
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition may cut through a run of equal scores: then sort those rows whole
        kth = np.take_along_axis(scores, part, 1).min(axis=1, keepdims=True)
        if (np.sum(scores >= kth, axis=1) > k).any():
            part = None
    elif scores.shape[1]:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    if part is None:
        order = np.lexsort((indices, -scores), axis=1)[:, :k]
    else:
        sub_scores = np.take_along_axis(scores, part, 1)
        sub_indices = np.take_along_axis(indices, part, 1)
        order = np.take_along_axis(part, np.lexsort((sub_indices, -sub_scores), axis=1), 1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)


def read_whitening(h5file):
    """(mean, projection) of a base indexed with --whiten, else None."""
    if "whiten_projection" not in h5file:
        return None
    return h5file["whiten_mean"][:], h5file["whiten_projection"][:]


def whiten(features, mean, projection):
    """Features through a base's learnt PCA whitening (retrieval/whiten.py), L2-normalised
    again; the gallery and every query go through the same one."""
    out = (np.asarray(features, dtype=np.float32) - mean) @ projection
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class Gallery:
    """The gallery's features and names, held in memory (a package is served whole), whitened
    where the base was indexed with --whiten."""

    def __init__(self, path):
        import h5py

        with h5py.File(path, "r") as f:
            self.features = np.asarray(f["features"][:], dtype=np.float32)
            self.names = f["names"].asstr()[:].tolist()
            self.whitening = read_whitening(f)
        if self.whitening:
            self.features = whiten(self.features, *self.whitening)

    def __len__(self):
        return len(self.names)

    def nearest(self, embeddings, k):
        """[[name, score], ...] of the k nearest gallery images, per embedding."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if self.whitening:
            embeddings = whiten(embeddings, *self.whitening)
        scores = embeddings @ self.features.T
        ids = np.broadcast_to(np.arange(len(self.names)), scores.shape)
        top_scores, top_ids = best_k(scores, ids, k)
        return [[[self.names[i], float(s)] for i, s in zip(row_ids, row_scores)]
                for row_ids, row_scores in zip(top_ids.tolist(), top_scores.tolist())]


class MilvusGallery:
    """The gallery in a Milvus collection (retrieval.json's "milvus":
    milvus://HOST:PORT/COLLECTION), searched by its own index per request; the package holds
    no features. One of another model (its fingerprint) is refused at load."""

    def __init__(self, settings):
        from pymilvus import MilvusClient  # pymilvus >= 2.3, in config.json's dependencies

        url = settings["milvus"]
        host, _, collection = url[len("milvus://"):].partition("/")
        self.collection = collection.strip("/")
        self.client = MilvusClient("http://" + host, token=os.environ.get("MILVUS_TOKEN", ""))
        properties = self.client.describe_collection(self.collection).get("properties", {})
        if properties.get("fingerprint") != settings.get("fingerprint"):
            raise ValueError("{} holds the features of model {}, not of this package's ({}): "
                             "index the gallery again with this model".format(
                                 url, properties.get("fingerprint"), settings.get("fingerprint")))
        if hasattr(self.client, "load_collection"):
            self.client.load_collection(self.collection)
        else:  # pymilvus 2.3 (Python 3.7): its MilvusClient cannot load one; the ORM can
            from pymilvus import Collection

            Collection(self.collection, using=self.client._using).load()
        self.search_params = {"metric_type": "IP", "params": settings.get("search_params", {})}

    def __len__(self):
        found = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(found[0]["count(*)"])

    def nearest(self, embeddings, k):
        """[[name, score], ...] of the k nearest gallery images, per embedding."""
        found = self.client.search(
            self.collection, data=np.asarray(embeddings, dtype=np.float32).tolist(), limit=k,
            search_params=self.search_params, output_fields=["name"])  # its one vector field
        return [[[hit["entity"]["name"], float(hit["distance"])] for hit in hits]
                for hits in found]


def open_gallery(model_dir, settings):
    """The gallery retrieval.json (`settings`) names: a Milvus collection, else the HDF5 base
    inside the package."""
    if settings.get("milvus"):
        return MilvusGallery(settings)
    return Gallery(os.path.join(model_dir, settings["index"]))
