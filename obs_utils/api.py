"""The public calls: each takes obs://, s3://, file:// or plain local paths and does the same thing.

On ModelArts (real MoXing present) remote URLs go through `moxing.file`; elsewhere through boto3
(s3.py, tree.py). Local paths are always handled here, with atomic writes.
"""
import functools
import json
import os

from . import local, s3, tree
from .errors import NotFoundError, ObsError, translate
from .s3_config import get_client
from .moxing_backend import get_mox_file
from .urls import join, parse


def _as_written(function):
    """Errors name the URLs as the caller wrote them: s3.py names every object obs://, so a
    caller's s3://bucket/... came back as obs://bucket/... in the message."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ObsError as exc:
            message = str(exc)
            for value in (*args, *kwargs.values()):
                if isinstance(value, str) and value.startswith("s3://"):
                    bucket = value[len("s3://"):].split("/", 1)[0]
                    message = message.replace(f"obs://{bucket}/", f"s3://{bucket}/")
            exc.args = (message,)
            raise
    return call


def _mox(*urls):
    """The MoXing module when one of `urls` is remote and MoXing is present, else None."""
    if any(parse(u).is_remote for u in urls):
        return get_mox_file()
    return None


def _mox_call(name, url, *args, **kwargs):
    """Call moxing.file.<name>, turning its exceptions into ObsError with the URL."""
    mox_file = get_mox_file()
    try:
        return getattr(mox_file, name)(*args, **kwargs)
    except ObsError:
        raise
    except Exception as exc:  # noqa: BLE001 - MoXing raises many kinds; one message for the user
        raise ObsError(f"MoXing {name} failed on {url}: {type(exc).__name__}: {exc}") from None


@_as_written
def exists(url):
    """True if a file or a folder exists at `url`."""
    loc = parse(url)
    if _mox(url):
        return bool(_mox_call("exists", url, loc.url))
    return s3.exists(loc.bucket, loc.path) if loc.is_remote else os.path.exists(loc.path)


@_as_written
def is_dir(url):
    """True if `url` is a folder (a prefix holding objects, for remote URLs)."""
    loc = parse(url)
    if _mox(url):
        return bool(_mox_call("is_directory", url, loc.url))
    return s3.is_dir(loc.bucket, loc.path) if loc.is_remote else os.path.isdir(loc.path)


@_as_written
def listdir(url, recursive=False):
    """Sorted names in the folder `url`: files and sub-folders, or with recursive=True every file
    below it, as paths relative to `url` with '/'."""
    loc = parse(url)
    if _mox(url):
        return sorted(_mox_call("list_directory", url, loc.url, recursive=recursive))
    if loc.is_remote:
        return s3.listdir(loc.bucket, loc.path, recursive)
    return local.listdir(loc.path, recursive)


@_as_written
def read_bytes(url):
    loc = parse(url)
    if _mox(url):
        return _mox_call("read", url, loc.url, binary=True)
    return s3.read_bytes(loc.bucket, loc.path) if loc.is_remote else local.read_bytes(loc.path)


@_as_written
def write_bytes(url, data):
    """Write a whole file; local writes are atomic, remote ones are by nature."""
    loc = parse(url)
    if _mox(url):
        return _mox_call("write", url, loc.url, data, binary=True)
    if loc.is_remote:
        return s3.write_bytes(loc.bucket, loc.path, data)
    return local.write_bytes(loc.path, data)


@_as_written
def read_text(url, encoding="utf-8"):
    return read_bytes(url).decode(encoding)


@_as_written
def write_text(url, text, encoding="utf-8"):
    write_bytes(url, text.encode(encoding))


@_as_written
def make_dirs(url):
    loc = parse(url)
    if _mox(url):
        return _mox_call("make_dirs", url, loc.url)
    if loc.is_remote:
        return s3.make_dirs(loc.bucket, loc.path)
    os.makedirs(loc.path, exist_ok=True)


@_as_written
def remove(url, recursive=False):
    """Delete a file, or a folder and everything in it when recursive=True."""
    loc = parse(url)
    if _mox(url):
        return _mox_call("remove", url, loc.url, recursive=recursive)
    if loc.is_remote:
        return s3.remove(loc.bucket, loc.path, recursive)
    return local.remove(loc.path, recursive)


@_as_written
def copy(src, dst, threads=8):
    """Copy one file between any two locations; a `dst` ending in '/' (or a local folder)
    receives the file under its own name."""
    src_loc, dst_loc = parse(src), parse(dst)
    name = src_loc.path.rstrip("/").rsplit("/", 1)[-1]
    if str(dst).endswith("/") or (not dst_loc.is_remote and os.path.isdir(dst_loc.path)):
        dst_loc = parse(str(dst).rstrip("/") + "/" + name)
    if _mox(src, dst):
        return _mox_call("copy", src, src_loc.url, dst_loc.url)
    if src_loc.is_remote:
        info = s3.head(src_loc.bucket, src_loc.path)
        if info is None:
            kind = "a folder (use copy_tree)" if s3.is_dir(src_loc.bucket, src_loc.path) else \
                "not found"
            raise NotFoundError(f"cannot copy {src}: {kind}")
    elif not os.path.isfile(src_loc.path):
        raise NotFoundError(f"cannot copy {src}: no such local file")
    try:
        if src_loc.is_remote and dst_loc.is_remote:
            s3.server_copy(src_loc.bucket, info, dst_loc.bucket, dst_loc.path, threads)
        elif src_loc.is_remote:
            s3.download(src_loc.bucket, info, dst_loc.path, threads)
        elif dst_loc.is_remote:
            s3.upload(src_loc.path, dst_loc.bucket, dst_loc.path, threads)
        else:
            local.copy_file(src_loc.path, dst_loc.path)
    except ObsError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated for the user
        raise translate(exc, src, get_client()) from None


def local_path(root, name):
    """The local path for `name` (a key suffix, as listdir returns it) under the folder `root`,
    refused with UnsafeKeyError when it would land outside it ('..', an absolute path): every
    key that becomes a local path goes through here, as copy_tree's do."""
    return tree._inside(root, name)


@_as_written
def cached_copy(src, dst):
    """Make local `dst` a copy of the remote file `src`, fetching it only when `dst` is not
    already that object: the size and ETag it had when fetched (kept beside it in
    `dst` + '.source.json') must still be the remote's. Returns True when it fetched. A cache
    is never trusted on its name alone: the object may have changed, or the bucket been made
    anew. Through MoXing (no ETag there) it always fetches."""
    loc = parse(src)
    if _mox(src):
        copy(src, dst)
        return True
    info = s3.head(loc.bucket, loc.path)
    if info is None:
        raise NotFoundError(f"cannot copy {src}: not found")
    source = {"url": src, "size": info.size, "etag": info.etag}
    record = dst + ".source.json"
    try:
        with open(record, encoding="utf-8") as f:
            held = json.load(f)
    except (OSError, ValueError):
        held = None
    if held == source and os.path.isfile(dst) and os.path.getsize(dst) == info.size:
        return False
    forget_cached(dst)
    copy(src, dst)
    local.write_bytes(record, json.dumps(source).encode())
    return True


def forget_cached(dst):
    """Remove a cached copy and its record (its remote object is gone or changed)."""
    for path in (dst, dst + ".source.json"):
        if os.path.isfile(path):
            os.remove(path)


@_as_written
def copy_tree(src, dst, threads=None, progress=True, delete=False, exclude=()):
    """Copy everything under folder `src` into folder `dst` (either may be remote).

    Parallel, retried, atomic per file, and incremental: files already at `dst` unchanged are
    skipped. delete=True also removes what `dst` holds and `src` does not (a mirror);
    `exclude` names files (relative to `src`) that are neither copied nor removed. Returns
    tree.CopyStats(copied, skipped, bytes_copied), all None when MoXing copied (it reports
    nothing).
    """
    src_loc, dst_loc = parse(src), parse(dst)
    if _mox(src, dst):
        return _mox_copy_tree(src, dst, src_loc, dst_loc, delete, exclude)
    return tree.copy_tree(src_loc, dst_loc, threads=threads, progress=progress, delete=delete,
                          exclude=exclude)


def _mox_copy_tree(src, dst, src_loc, dst_loc, delete, exclude):
    """copy_tree through MoXing, with the guards of our own copy: every key that becomes a
    local path is checked before anything is copied (copy_parallel checks none), and
    delete=True removes what dst holds beyond src (copy_parallel never deletes)."""
    names = listdir(src, recursive=True)
    if not dst_loc.is_remote:
        for name in names:
            local_path(dst_loc.path, name)  # UnsafeKeyError before any file lands
    if exclude:  # copy_parallel takes no filter: file by file
        for name in names:
            if name not in exclude and not is_dir(join(src, name)):
                target = (join(dst, name) if dst_loc.is_remote
                          else local_path(dst_loc.path, name))
                copy(join(src, name), target)
    else:
        _mox_call("copy_parallel", src, src_loc.url, dst_loc.url)
    if delete and exists(dst):
        wanted = set(names) | set(exclude)
        for name in listdir(dst, recursive=True):
            if name not in wanted and not is_dir(join(dst, name)):
                remove(join(dst, name))
    return tree.CopyStats(None, None, None)  # MoXing does not report what it copied
