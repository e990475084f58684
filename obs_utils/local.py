"""Local-path counterparts of the s3 operations, with the same error classes and atomic writes."""
import contextlib
import os
import secrets
import shutil
import time

from .errors import NotFoundError, ObsError

TEMP_PREFIX = ".obs-tmp-"  # half-written files; tree copies never pick these up


def _read_umask():
    """The process umask, read without changing it where Linux shows it (/proc/self/status):
    os.umask(0) and back again leaves a window in which the files and folders other threads
    make come out world-writable (1 folder in 6,000 did in a parallel copy). Elsewhere the
    two calls are made once, here at import."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def _temp_file(path):
    """(fd, name) of a new temporary file beside `path`, made exclusively with 0o666 less the
    umask (as open() makes files), its folder made first if missing."""
    folder, name = os.path.split(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{name[:40]}.{secrets.token_hex(6)}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
    raise ObsError(f"cannot make a temporary file in {folder}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename (with
    the usual permissions, whatever its writer set, e.g. shutil.copy2's copy of the source's),
    on failure it is removed. Readers never see half a file."""
    fd, tmp = _temp_file(path)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _missing(path):
    return NotFoundError(f"not found: {path} (no such local file or folder)")


def listdir(path, recursive=False):
    if not os.path.isdir(path):
        raise _missing(path)
    if not recursive:
        return sorted(os.listdir(path))
    return sorted(rel for rel, _full, _size, _mtime in iter_files(path))


def remove_debris(path, older_than=900):
    """Remove the temporary files a killed copy left under `path` (TEMP_PREFIX, s3transfer's
    parts of them included) when untouched for `older_than` seconds, so that repeated
    pre-emptions do not fill ModelArts' /cache; a copy still writing its own is left alone.
    Returns how many were removed."""
    removed, now = 0, time.time()
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if name.startswith(TEMP_PREFIX):
                try:
                    if now - os.stat(full).st_mtime > older_than:
                        os.remove(full)
                        removed += 1
                except OSError:
                    continue  # gone already, or not ours to remove
    return removed


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


def write_bytes(path, data, mtime=None):
    """Write a whole file atomically (temp file, then one rename), its time set to `mtime`
    when given. Five system calls: a tree copy's threads release the GIL around each one, so
    on a busy copy every call saved is a wait for the GIL saved (atomic_path, which hands a
    path to writers that open it themselves, takes more)."""
    fd, tmp = _temp_file(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_whole(path):
    """The bytes of a file, in three system calls (open() adds four more: fstat, ioctl, ...)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def copy_file(src, dst):
    """Atomic copy keeping the modification time (which the unchanged-file check compares)."""
    if not os.path.isfile(src):
        raise _missing(src)
    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)


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
