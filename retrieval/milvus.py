"""A feature base in Milvus, for galleries past one machine's memory (pymilvus).

--index_url=milvus://HOST:PORT/COLLECTION names a collection on a Milvus server (credentials,
if it asks for them, in MILVUS_TOKEN as user:password); --index_url=PATH.db is milvus-lite,
Milvus' embedded engine, in a local folder (its collection is called `gallery`).

One row an image: `name` (the primary key: its path relative to the gallery, with /), `digest`
(sha1 of its bytes), `label` (its class name, '' when unknown) and `vector` (float32,
L2-normalised). The collection's properties say which model made it (base.MODEL_KEYS). Index
works in place: rows the gallery still holds unchanged are kept, the others deleted, new images
inserted, so a re-run after an interruption embeds only what is missing. Milvus ranks by inner
product with the index chosen when the collection was made: FLAT (exact), HNSW or IVF_FLAT.
"""
import os
import re
import time

import numpy as np

import obs_utils
from errors import UserError
from version import VERSION

from . import base

SCHEME = "milvus://"
LITE_COLLECTION = "gallery"
FORMAT = "milvus-1"
NAME_LENGTH = 4096  # bytes of a gallery path; longer ones are left out with a warning
LABEL_LENGTH = 1024
INDEXES = {  # --search -> (Milvus index type, build parameters, search parameters)
    "exact": ("FLAT", {}, {}),
    "hnsw": ("HNSW", {"M": 32, "efConstruction": 80}, {"ef": 64}),
    "ivf": ("IVF_FLAT", {"nlist": 1024}, {"nprobe": 16}),
}
KINDS = {index_type: kind for kind, (index_type, _, _) in INDEXES.items()}
QUERY_BATCH = 1024  # queries a search call; rows an insert or a read
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def is_milvus(url):
    """Whether --index_url names a Milvus collection rather than an HDF5 base."""
    return url.startswith(SCHEME) or url.rstrip("/").lower().endswith(".db")


def parse(url):
    """(uri, collection) for pymilvus from a Milvus --index_url."""
    if url.startswith(SCHEME):
        host, _, collection = url[len(SCHEME):].partition("/")
        collection = collection.strip("/")
        if not host or not _COLLECTION_NAME.match(collection):
            raise UserError(f"--index_url={url}: write milvus://HOST:PORT/COLLECTION, the "
                            "collection's name letters, digits and _ (not starting with a digit)")
        return f"http://{host}", collection
    if obs_utils.is_remote(url):
        raise UserError(f"--index_url={url}: milvus-lite keeps its .db folder on a local disk; "
                        "use a local PATH.db, or a Milvus server (milvus://HOST:PORT/COLLECTION)")
    return os.path.abspath(url.rstrip("/")), LITE_COLLECTION


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise UserError("a Milvus --index_url needs pymilvus (and milvus-lite for PATH.db): "
                        "pip install pymilvus milvus-lite (on ModelArts, add pymilvus to "
                        "pip-requirements.txt)") from None
    return pymilvus


def connect(url):
    """(client, collection name) for a Milvus --index_url; an unreachable server or a .db
    folder another process holds is a UserError saying so."""
    pymilvus = _pymilvus()
    uri, collection = parse(url)
    if not uri.startswith("http"):
        os.makedirs(os.path.dirname(uri), exist_ok=True)
    try:
        client = pymilvus.MilvusClient(uri, token=os.environ.get("MILVUS_TOKEN", ""),
                                       timeout=30)
        client.list_collections()  # a server that answers, a .db this process may open
    except pymilvus.MilvusException as exc:
        raise UserError(f"cannot open Milvus at {uri} for {url}: {exc.message}; is the server "
                        "running (or the .db folder in use by another process)?") from None
    return client, collection


class MilvusBase:
    """An open Milvus collection as a feature base, with FeatureBase's model check."""

    def __init__(self, url, client, collection):
        self.url, self.client, self.collection = url, client, collection
        described = client.describe_collection(collection)
        self.properties = dict(described.get("properties", {}))
        if self.properties.get("format") != FORMAT:
            raise base.BaseError(f"{url} is a Milvus collection this tool did not make (no "
                                 f"format {FORMAT!r} in its properties): name another one")
        client.load_collection(collection)
        index = client.describe_index(collection, "vector")
        self.kind = KINDS.get(index.get("index_type"), "exact")
        self.whitening = None  # Milvus compares the vectors as stored

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.client.close()

    @property
    def meta(self):
        return {**base.OLD_DEFAULTS, **self.properties}

    def check_model(self, model_meta):
        base.check_same_model(self.url, self.meta, model_meta)

    def __len__(self):
        found = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(found[0]["count(*)"])

    def prepare(self, features):
        return np.asarray(features, dtype=np.float32)

    def held(self, vectors=False):
        """Every row, in batches: lists of {name, digest, label[, vector]}."""
        fields = ["name", "digest", "label"] + (["vector"] if vectors else [])
        rows = self.client.query_iterator(self.collection, batch_size=QUERY_BATCH,
                                          output_fields=fields)
        try:
            while True:
                batch = rows.next()
                if not batch:
                    return
                yield batch
        finally:
            rows.close()

    def search(self, queries, k):
        """(scores [Q, k], names [Q][<=k], labels [Q][<=k]) of each query's k nearest rows,
        by the collection's index; each row of names is in rank order."""
        params = {"metric_type": "IP", "params": INDEXES[self.kind][2]}
        scores, names, labels = [], [], []
        for start in range(0, len(queries), QUERY_BATCH):
            found = self.client.search(
                self.collection, data=np.asarray(queries[start:start + QUERY_BATCH],
                                                 dtype=np.float32),
                limit=k, anns_field="vector", search_params=params,
                output_fields=["label"])
            for hits in found:
                scores.append([hit["distance"] for hit in hits])
                names.append([hit["name"] for hit in hits])
                labels.append([hit["entity"]["label"] for hit in hits])
        return scores, names, labels

    def vectors(self, names):
        """float32 [len(names), D]: the stored vectors of rows named in `names`."""
        unique = sorted(set(names))
        found = {}
        for start in range(0, len(unique), QUERY_BATCH):
            for row in self.client.get(self.collection, ids=unique[start:start + QUERY_BATCH],
                                       output_fields=["vector"]):
                found[row["name"]] = row["vector"]
        return np.asarray([found[name] for name in names], dtype=np.float32)


def open_base(url):
    """The Milvus collection at `url`, loaded for search; BaseError when it is not there."""
    client, collection = connect(url)
    if not client.has_collection(collection):
        client.close()
        raise base.BaseError(f"{url} does not exist: make it with python retrieve.py index "
                             f"--index_url={url}")
    try:
        return MilvusBase(url, client, collection)
    except BaseException:
        client.close()
        raise


def existing_meta(url):
    """The model keys of the collection at `url` ({} when there is none yet)."""
    client, collection = connect(url)
    try:
        if not client.has_collection(collection):
            return {}
        properties = client.describe_collection(collection).get("properties", {})
        return {**base.OLD_DEFAULTS, **properties}
    finally:
        client.close()


def open_for_index(url, model_meta, kind, rebuild=False):
    """The collection at `url` to index into, made (with `kind`'s index: None is exact) when
    it is not there, or made again with --rebuild. One of another model, or with another
    index than an explicit `kind`, is refused, saying to rebuild."""
    client, collection = connect(url)
    try:
        if client.has_collection(collection) and rebuild:
            client.drop_collection(collection)
        if not client.has_collection(collection):
            _create(client, collection, model_meta, kind or "exact")
        opened = MilvusBase(url, client, collection)
    except BaseException:
        client.close()
        raise
    try:
        opened.check_model(model_meta)
        if kind and kind != opened.kind:
            raise base.BaseError(f"{url} was made with --search={opened.kind} "
                                 f"({INDEXES[opened.kind][0]}); pass --rebuild=true to make "
                                 f"it again with {INDEXES[kind][0]}, or leave --search out")
    except BaseException:
        opened.close()
        raise
    return opened


def _create(client, collection, model_meta, kind):
    """A new collection for `model_meta`'s vectors, indexed as `kind` by inner product."""
    pymilvus = _pymilvus()
    schema = client.create_schema(auto_id=False, description="retrieve.py feature base")
    schema.add_field("name", pymilvus.DataType.VARCHAR, is_primary=True, max_length=NAME_LENGTH)
    schema.add_field("digest", pymilvus.DataType.VARCHAR, max_length=64)
    schema.add_field("label", pymilvus.DataType.VARCHAR, max_length=LABEL_LENGTH)
    schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=int(model_meta["dim"]))
    index_type, build, _ = INDEXES[kind]
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=build)
    properties = {key: str(model_meta[key]) for key in base.MODEL_KEYS}
    properties.update(format=FORMAT, version=VERSION,
                      created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    client.create_collection(collection, schema=schema, index_params=index,
                             properties=properties, consistency_level="Strong")


def storable_name(name):
    """Whether a gallery path fits the collection's primary key."""
    return len(name.encode("utf-8")) <= NAME_LENGTH


def delete(opened, names):
    """Remove the rows named in `names`."""
    names = list(names)
    for start in range(0, len(names), QUERY_BATCH):
        opened.client.delete(opened.collection, ids=names[start:start + QUERY_BATCH])


def insert(opened, features, names, digests, labels):
    """Add rows (features L2-normalised, as embedded)."""
    rows = [{"name": n, "digest": d, "label": lab, "vector": f}
            for f, n, d, lab in zip(np.asarray(features, dtype=np.float32), names, digests,
                                    labels)]
    for start in range(0, len(rows), QUERY_BATCH):
        opened.client.insert(opened.collection, rows[start:start + QUERY_BATCH])
