"""Parse the three kinds of location obs_utils accepts: obs://, s3:// and local paths.

`obs://bucket/key` and `s3://bucket/key` name the same thing (ModelArts used both over the
years); `file:///x` and plain paths are local. Keys are kept exactly as written, except that a
`file://` prefix is dropped.
"""
import os
import posixpath
from typing import NamedTuple

from .errors import SettingError

REMOTE_SCHEMES = ("obs://", "s3://")


class Location(NamedTuple):
    """A parsed location: `bucket` is None for local paths, `path` is the key or the local path."""

    url: str
    bucket: object  # str, or None when local
    path: str

    @property
    def is_remote(self):
        return self.bucket is not None


def is_remote(url):
    """True for obs:// and s3:// URLs (any letter case of the scheme)."""
    return str(url).lower().startswith(REMOTE_SCHEMES)


def parse(url):
    """Split `url` into a Location; a remote URL must name a bucket."""
    url = os.fspath(url)
    if is_remote(url):
        rest = url.split("://", 1)[1]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise SettingError(f"{url!r} names no bucket: write it as obs://<bucket>/<path>")
        return Location(url, bucket, key)
    if url.lower().startswith("file://"):
        url = url[len("file://"):]
    return Location(url, None, url)


def join(url, *parts):
    """Join path parts onto a location with '/', keeping the scheme and bucket."""
    if is_remote(url):
        base = str(url)
        for part in parts:
            base = base.rstrip("/") + "/" + str(part).lstrip("/")
        return base
    return os.path.join(parse(url).path, *parts)


def dir_prefix(key):
    """The key prefix that lists the contents of a remote 'directory' ('' for the bucket root)."""
    return key if key == "" or key.endswith("/") else key + "/"


def safe_relative(rel, where):
    """Check that an object's key, relative to the copied prefix, stays inside the destination.

    Keys are free-form strings on S3: `../x`, `/etc/x` or `a/../../x` would escape a download
    folder. Such keys are refused (ValueError naming the key), never rewritten into something else.
    """
    parts = rel.split("/")
    if rel.startswith("/") or ".." in parts or "\\" in rel and ".." in rel.split("\\"):
        raise ValueError(f"refusing object key {where!r}: its path {rel!r} would land outside "
                         "the destination folder ('..' or an absolute path)")
    norm = posixpath.normpath(rel)
    if norm in ("", ".") or norm.startswith("../"):
        raise ValueError(f"refusing object key {where!r}: it does not name a file under the prefix")
    return norm
