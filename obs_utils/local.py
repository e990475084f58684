"""Local-path counterparts of the s3 operations, with the same error classes and atomic writes."""
import os
import shutil
import tempfile

from .errors import NotFoundError, ObsError


def _missing(path):
    return NotFoundError(f"not found: {path} (no such local file or folder)")


def listdir(path, recursive=False):
    if not os.path.isdir(path):
        raise _missing(path)
    if not recursive:
        return sorted(os.listdir(path))
    return sorted(rel for rel, _full, _size, _mtime in iter_files(path))


def iter_files(path):
    """Yield (relative path with '/', absolute path, size, mtime) for every file under `path`."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            stat = os.stat(full)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            yield rel, full, stat.st_size, stat.st_mtime


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise _missing(path) from None
    except IsADirectoryError:
        raise ObsError(f"{path} is a folder, not a file") from None


def write_bytes(path, data):
    """Write through a temporary file in the same folder, so readers never see half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".obs-tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def copy_file(src, dst):
    """Atomic copy keeping the modification time (which the unchanged-file check compares)."""
    if not os.path.isfile(src):
        raise _missing(src)
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".obs-tmp-", dir=folder)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise


def remove(path, recursive=False):
    if os.path.isdir(path) and not os.path.islink(path):
        if not recursive and os.listdir(path):
            raise ObsError(f"{path} is a folder: pass recursive=True to remove it and "
                           "everything in it")
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
    else:
        raise _missing(path)
