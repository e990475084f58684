"""Single-object operations on an S3-compatible store (OBS, MinIO, moto) through boto3.

Every function takes a bucket and a key and raises ObsError subclasses with a message a user can
act on. Tree copies live in tree.py; this module is what they are built from.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from boto3.s3.transfer import TransferConfig

from .errors import NotFoundError, ObsError, translate
from .local import atomic_path, read_whole
from .local import write_bytes as write_bytes_local
from .s3_config import get_client, get_signed
from .urls import dir_prefix

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNKSIZE = 8 * 1024 * 1024


class ObjectInfo(NamedTuple):
    key: str
    size: int
    etag: str
    mtime: float  # seconds since the epoch


def url_of(bucket, key):
    return f"obs://{bucket}/{key}"


def transfer_config(threads):
    """Multipart above 8 MiB, `threads` parts in flight for one large file."""
    return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                          multipart_chunksize=MULTIPART_CHUNKSIZE,
                          max_concurrency=max(1, threads), use_threads=threads > 1)


def _raise(exc, bucket, key, client):
    """Translate `exc`; a bare 404 is told apart into 'no such bucket' and 'no such key'."""
    error = translate(exc, url_of(bucket, key), client)
    if isinstance(error, NotFoundError) and "bucket" not in str(error) and not bucket_exists(bucket):
        error = translate(_no_such_bucket(), url_of(bucket, key), client)
    raise error from None


def _no_such_bucket():
    from botocore.exceptions import ClientError
    return ClientError({"Error": {"Code": "NoSuchBucket"}}, "HeadBucket")


def bucket_exists(bucket):
    client = get_client()
    try:
        client.head_bucket(Bucket=bucket)
        return True
    except Exception as exc:  # noqa: BLE001 - translated below
        error = translate(exc, url_of(bucket, ""), client)
        if isinstance(error, NotFoundError):
            return False
        raise error from None


def head(bucket, key):
    """ObjectInfo of one object, or None when there is no object at exactly `key`."""
    client = get_client()
    if key == "" or key.endswith("/"):
        return None
    try:
        reply = client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - translated below
        error = translate(exc, url_of(bucket, key), client)
        if isinstance(error, NotFoundError):
            if not bucket_exists(bucket):
                _raise(_no_such_bucket(), bucket, key, client)
            return None
        raise error from None
    return ObjectInfo(key, reply["ContentLength"], reply.get("ETag", "").strip('"'),
                      reply["LastModified"].timestamp())


def iter_objects(bucket, prefix, delimiter=None):
    """Yield ObjectInfo for every object under `prefix` (and, with a delimiter, 'dir/' names)."""
    client, signed = get_client(), get_signed()
    try:
        if signed is not None:
            token = None
            while True:
                objects, prefixes, token = signed.list_page(bucket, prefix, delimiter, token)
                for name in prefixes:
                    yield ObjectInfo(name, 0, "", 0.0)
                for key, size, etag, mtime in objects:
                    yield ObjectInfo(key, size, etag, mtime)
                if token is None:
                    return
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
            for common in page.get("CommonPrefixes", []):
                yield ObjectInfo(common["Prefix"], 0, "", 0.0)
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"], obj["Size"], obj.get("ETag", "").strip('"'),
                                 obj["LastModified"].timestamp())
    except Exception as exc:  # noqa: BLE001 - translated
        _raise(exc, bucket, prefix, client)


def is_dir(bucket, key):
    if key == "":
        return bucket_exists(bucket)
    return next(iter_objects(bucket, dir_prefix(key)), None) is not None


def exists(bucket, key):
    return head(bucket, key) is not None or is_dir(bucket, key)


def listdir(bucket, key, recursive=False):
    """Names under a 'directory', relative to it, sorted; sub-directories without a trailing '/'."""
    prefix = dir_prefix(key)
    names = set()
    for info in iter_objects(bucket, prefix, delimiter=None if recursive else "/"):
        rel = info.key[len(prefix):].rstrip("/")
        if rel:
            names.add(rel)
    if not names and not is_dir(bucket, key):
        raise NotFoundError(f"not found: {url_of(bucket, key)} (no such folder)")
    return sorted(names)


def read_bytes(bucket, key):
    client = get_client()
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # noqa: BLE001 - translated
        if isinstance(translate(exc, "", client), NotFoundError) and is_dir(bucket, key):
            raise ObsError(f"{url_of(bucket, key)} is a folder, not a file") from None
        _raise(exc, bucket, key, client)


def write_bytes(bucket, key, data):
    client = get_client()
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data)
    except Exception as exc:  # noqa: BLE001 - translated
        _raise(exc, bucket, key, client)


def make_dirs(bucket, key):
    """Create the folder marker object 'key/' (what the OBS console shows as a folder)."""
    if key and not is_dir(bucket, key):
        write_bytes(bucket, dir_prefix(key), b"")


def remove(bucket, key, recursive=False):
    """Delete one object, or with recursive=True every object under the folder `key`."""
    client = get_client()
    if head(bucket, key) is not None:
        try:
            client.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - translated
            _raise(exc, bucket, key, client)
        return
    keys = [info.key for info in iter_objects(bucket, dir_prefix(key))]
    if not keys:
        raise NotFoundError(f"not found: {url_of(bucket, key)} (nothing to remove)")
    if not recursive:
        raise ObsError(f"{url_of(bucket, key)} is a folder: pass recursive=True to remove it "
                       "and everything in it")
    delete_keys(bucket, keys)


def delete_keys(bucket, keys):
    """Delete the given objects, a thousand per request."""
    client = get_client()
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start:start + 1000]]
        try:
            reply = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        except Exception as exc:  # noqa: BLE001 - translated
            _raise(exc, bucket, batch[0]["Key"], client)
        if reply.get("Errors"):
            first = reply["Errors"][0]
            raise ObsError(f"could not remove {url_of(bucket, first['Key'])}: {first['Code']}")


def download(bucket, info, local_path, threads=1, attempts=None):
    """Fetch one object to `local_path` atomically and stamp it with the object's mtime.
    `attempts`: of each signed request (default OBS_MAX_ATTEMPTS; a tree copy asks for 1).

    Small objects are one signed GET (signed.py: a fifth of the client's CPU per file) into a
    temporary file; large ones signed ranged GETs in parallel (_download_parts), or through
    boto3's transfer manager where signed.py does not apply.
    """
    signed = get_signed()
    if info.size >= MULTIPART_THRESHOLD and signed is not None and info.etag:
        _download_parts(signed, bucket, info, local_path, threads, attempts)
    elif info.size >= MULTIPART_THRESHOLD:  # its parts go to a temporary file of ours too, so
        with atomic_path(local_path) as tmp:  # a killed copy leaves only .obs-tmp-* debris
            get_client().download_file(bucket, info.key, tmp, Config=transfer_config(threads))
    else:
        if signed is not None:
            data = signed.get(bucket, info.key, attempts)
        else:  # one GET: the transfer manager would HEAD first, a second round trip
            data = get_client().get_object(Bucket=bucket, Key=info.key)["Body"].read()
        write_bytes_local(local_path, data, mtime=info.mtime)
        return
    os.utime(local_path, (info.mtime, info.mtime))


def _download_parts(signed, bucket, info, local_path, threads, attempts=None):
    """A large object in ranged GETs of MULTIPART_CHUNKSIZE, `threads` at once, each written
    in place (os.pwrite) into one temporary file, renamed when all are in. (boto3's transfer
    manager HEADs first and funnels every part through one writer thread: 0.67x s5cmd's
    download speed here.)"""
    spans = [(start, min(start + MULTIPART_CHUNKSIZE, info.size) - 1)
             for start in range(0, info.size, MULTIPART_CHUNKSIZE)]
    with atomic_path(local_path) as tmp:
        fd = os.open(tmp, os.O_WRONLY)
        try:
            def fetch(span):
                part = signed.get_range(bucket, info.key, *span, info.etag, attempts)
                os.pwrite(fd, part, span[0])

            with ThreadPoolExecutor(max_workers=max(1, min(threads, len(spans)))) as pool:
                list(pool.map(fetch, spans))  # the first failure is raised here
        finally:
            os.close(fd)


def upload(local_path, bucket, key, threads=1, attempts=None):
    """Send one local file: one signed PUT below 8 MiB (signed.py; `attempts` as for
    download), multipart through the transfer manager above."""
    if os.path.getsize(local_path) >= MULTIPART_THRESHOLD:
        get_client().upload_file(local_path, bucket, key, Config=transfer_config(threads))
        return
    signed = get_signed()
    if signed is not None:
        signed.put(bucket, key, read_whole(local_path), attempts)
        return
    with open(local_path, "rb") as data:  # (bytes would meet Nagle's delay: botocore drops
        get_client().put_object(Bucket=bucket, Key=key, Body=data)  # TCP_NODELAY)


SOURCE_ETAG = "source-etag"  # metadata of a server-side copy: the ETag of what it copied


def server_copy(src_bucket, info, dst_bucket, dst_key, threads=1):
    """Copy an object inside the store (no bytes through this machine). The copy records the
    source's ETag in its metadata: a multipart copy gets an ETag of its own, never the
    source's, so without it a later sync could not tell the copy is current."""
    client = get_client()
    client.copy({"Bucket": src_bucket, "Key": info.key}, dst_bucket, dst_key,
                ExtraArgs={"Metadata": {SOURCE_ETAG: info.etag}, "MetadataDirective": "REPLACE"},
                Config=transfer_config(threads))


def copied_from(bucket, key):
    """The ETag of the object that `key` is a server-side copy of (server_copy), or None."""
    try:
        reply = get_client().head_object(Bucket=bucket, Key=key)
    except Exception:  # noqa: BLE001 - gone or unreadable: not known to be current
        return None
    return (reply.get("Metadata") or {}).get(SOURCE_ETAG)

