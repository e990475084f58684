"""Copy a whole folder between any two locations (MoXing's copy_parallel, without MoXing).

Files move in parallel threads; each is written atomically (temp then rename); a file already at
the destination and unchanged is skipped, so re-running an interrupted copy sends only the rest;
transient failures (timeouts, dropped connections, 5xx) are retried with exponential backoff.
Unchanged means, between a local file and an object: same size and the local file's MD5 equals the
object's ETag (multipart ETags are recomputed with the part size we upload with); where the store
gives no MD5 ETag (e.g. encrypted objects), same size and the newer side being the copy (downloads
are stamped with the object's time). Object times have one-second resolution, so size and time
alone would miss a same-size rewrite within a second: a checkpoint rewritten each epoch is one.
Between two local files: same size and time; between two objects: same size and ETag (or, for a
copy made inside the store, the source's ETag it recorded).
"""
import hashlib
import logging
import os
import queue
import random
import sys
import threading
import time
from typing import Callable, NamedTuple

from s3transfer.utils import ChunksizeAdjuster
from tqdm import tqdm

from . import local, s3
from .errors import (NotFoundError, ObsError, UnsafeKeyError, is_slowdown, is_transient,
                     translate)
from .s3_config import MAX_POOL_CONNECTIONS, get_client
from .throttle import Throttle
from .urls import dir_prefix, safe_relative

log = logging.getLogger("obs_utils")

def default_threads():
    """OBS_THREADS, default 32: small files at 10 ms gain nothing past 16 on two cores (the
    client's CPU decides), but at OBS' 30-50 ms 16 threads wait more than they work."""
    value = os.environ.get("OBS_THREADS", "32")
    try:
        return int(value)
    except ValueError:
        raise ObsError(f"OBS_THREADS={value!r}: use a whole number, e.g. 16") from None


ATTEMPTS = 4           # per file, on top of boto3's own retries of each request
SLOWDOWN_ATTEMPTS = 10  # per file, when the store keeps answering SlowDown
BACKOFF_SECONDS = 0.5   # doubled after each failed attempt...
BACKOFF_CAP_SECONDS = 8  # ...up to this


class CopyStats(NamedTuple):
    copied: int
    skipped: int
    bytes_copied: int


class _Job(NamedTuple):
    name: str            # what the user sees in an error: the source URL or path
    size: int
    unchanged: Callable  # () -> bool, runs in the worker thread
    transfer: Callable   # () -> None
    folder: str = None   # the local folder it writes into, made before the workers start
    memory: int = 0      # bytes it holds in memory while in flight


def _md5_etag(path, size):
    """The ETag S3 gives a file uploaded the way s3.upload sends it (plain or multipart MD5)."""
    if size < s3.MULTIPART_THRESHOLD:
        digest = hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    part = ChunksizeAdjuster().adjust_chunksize(s3.MULTIPART_CHUNKSIZE, size)
    parts = []
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(part), b""):
            parts.append(hashlib.md5(block).digest())
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def _looks_like_md5(etag):
    head = etag.split("-")[0]
    return len(head) == 32 and all(c in "0123456789abcdef" for c in head.lower())


def _same_local(path, size, mtime):
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return False
    return stat.st_size == size and abs(stat.st_mtime - mtime) < 1.0


def _same_content(remote, path, upload):
    """True if the local file at `path` holds what the object `remote` holds."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return False
    if remote is None or remote.size != stat.st_size:
        return False
    if _looks_like_md5(remote.etag):
        return remote.etag == _md5_etag(path, stat.st_size)
    if upload:  # no MD5 to compare: the object must be at least as new as the file
        return remote.mtime >= stat.st_mtime
    return abs(stat.st_mtime - remote.mtime) < 1.0


def _remote_files(bucket, prefix):
    """{relative name: ObjectInfo} under a prefix; every key checked to stay inside it."""
    files = {}
    for info in s3.iter_objects(bucket, prefix):
        rel = info.key[len(prefix):]
        if not rel or rel.endswith("/"):
            continue  # the folder itself, or a folder marker
        try:
            files[safe_relative(rel, s3.url_of(bucket, info.key))] = info
        except ValueError as exc:
            raise UnsafeKeyError(f"{exc}; nothing was copied") from None
    return files


def _local_files(path):
    return {rel: (full, size, mtime) for rel, full, size, mtime in local.iter_files(path)
            if not os.path.basename(rel).startswith(local.TEMP_PREFIX)}


def _inside(root, rel):
    target = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([target, os.path.realpath(root)]) != os.path.realpath(root):
        raise UnsafeKeyError(f"refusing {rel!r}: it would land outside {root}; nothing was copied")
    return target


def _same_object(held, source, bucket, key):
    """Is the object `held` (at bucket/key) a current copy of `source`? The same size, and the
    same ETag, or the source's ETag recorded by the server-side copy that made it (a multipart
    copy's own ETag never equals its source's)."""
    if held is None or held.size != source.size:
        return False
    return held.etag == source.etag or s3.copied_from(bucket, key) == source.etag


def _false():
    return False


def _part_threads(threads, sizes):
    """Parts in flight for each multipart file: the copy's threads shared among its large
    files (a lone 64 MB file gets up to 16 parts at once), but at least 4."""
    large = sum(1 for size in sizes if size >= s3.MULTIPART_THRESHOLD)
    return max(4, min(16, threads // max(1, large)))


def _memory(size, part_threads):
    """Bytes a file holds in memory in flight: small ones whole, large ones a part a thread."""
    if size < s3.MULTIPART_THRESHOLD:
        return size
    return part_threads * s3.MULTIPART_CHUNKSIZE


def _plan(src, dst, threads, exclude=()):
    """(per-file jobs, stale destination files) for a copy from Location `src` to `dst`; stale
    files are those at the destination that the source does not have (for delete=True).
    `threads`: the copy's; `exclude`: relative names neither copied nor removed."""
    jobs = []
    if src.is_remote:
        prefix = dir_prefix(src.path)
        sources = _remote_files(src.bucket, prefix)
        if not sources and not s3.is_dir(src.bucket, src.path):
            raise NotFoundError(f"not found: {src.url} (no such folder, or it holds no files)")
    else:
        if not os.path.isdir(src.path):
            raise NotFoundError(f"not found: {src.path} (no such local folder)")
        sources = _local_files(src.path)
    sources = {rel: item for rel, item in sources.items() if rel not in exclude}
    if dst.is_remote:
        dst_prefix = dir_prefix(dst.path)
        existing = {info.key: info for info in s3.iter_objects(dst.bucket, dst_prefix)}
        stale = [key for key in existing
                 if not key.endswith("/") and key[len(dst_prefix):] not in sources
                 and key[len(dst_prefix):] not in exclude]
    elif os.path.isfile(dst.path):
        raise ObsError(f"cannot copy the folder {src.url} into {dst.path}: that is a file")
    else:  # what the folder holds, listed once: a file it lacks needs no check of its own
        held = {rel: full for rel, full, _, _ in local.iter_files(dst.path)} \
            if os.path.isdir(dst.path) else {}
        stale = [full for rel, full in held.items() if rel not in sources and rel not in exclude]
    sizes = [item.size if src.is_remote else item[1] for item in sources.values()]
    parts = _part_threads(threads, sizes)

    for rel, item in sorted(sources.items()):
        if src.is_remote and not dst.is_remote:  # download
            target = _inside(dst.path, rel)
            jobs.append(_Job(s3.url_of(src.bucket, item.key), item.size,
                             (lambda t=target, i=item: _same_content(i, t, upload=False))
                             if rel in held else _false,
                             lambda t=target, i=item: s3.download(src.bucket, i, t, parts, 1),
                             os.path.dirname(target), _memory(item.size, parts)))
        elif src.is_remote:  # bucket to bucket, inside the store
            key = dst_prefix + rel
            jobs.append(_Job(s3.url_of(src.bucket, item.key), item.size,
                             lambda i=item, k=key: _same_object(existing.get(k), i,
                                                                dst.bucket, k),
                             lambda i=item, k=key: s3.server_copy(src.bucket, i, dst.bucket, k,
                                                                  parts)))
        elif dst.is_remote:  # upload
            full, size, _mtime = item
            key = dst_prefix + rel
            jobs.append(_Job(full, size,
                             lambda k=key, f=full: _same_content(existing.get(k), f, upload=True),
                             lambda k=key, f=full: s3.upload(f, dst.bucket, k, parts, 1),
                             None, _memory(size, parts)))
        else:  # local to local
            full, size, mtime = item
            target = _inside(dst.path, rel)
            jobs.append(_Job(full, size,
                             (lambda t=target, s=size, m=mtime: _same_local(t, s, m))
                             if rel in held else _false,
                             lambda f=full, t=target: local.copy_file(f, t),
                             os.path.dirname(target), 0))
    return jobs, stale


def _pause(failures):
    """Seconds to wait before attempt `failures` + 1: doubling, capped, with jitter so that
    threads throttled together do not come back together."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_SECONDS * 2 ** (failures - 1)) * random.uniform(0.5, 1)


def _run(job, abort, throttle):
    """Skip or transfer one file, retrying transient failures; returns 'copied'/'skipped'/None.
    A SlowDown answer also halves what the copy keeps in flight, and may be retried longer."""
    if abort.is_set():
        return None
    if job.unchanged():
        return "skipped"
    failures = 0
    while True:
        try:
            with throttle.slot(job.memory):
                job.transfer()
            return "copied"
        except Exception as exc:  # noqa: BLE001 - re-raised unless worth retrying
            failures += 1
            slow = is_slowdown(exc)
            if slow:
                throttle.slowed()
            if (not is_transient(exc) or abort.is_set()
                    or failures >= (SLOWDOWN_ATTEMPTS if slow else ATTEMPTS)):
                abort.set()
                raise
            time.sleep(_pause(failures))


def _start_workers(jobs, count, abort, throttle, done):
    """`count` threads taking the jobs in turn until none is left or `abort` is set, each
    outcome put on `done`. (A Future per file, as an executor makes, cost a tenth of a small
    file copy's CPU: its Condition, and a wake-up of the main thread for each.)"""
    pending = iter(jobs)
    take = threading.Lock()

    def work():
        while not abort.is_set():
            with take:
                job = next(pending, None)
            if job is None:
                return
            try:
                done.put((job, _run(job, abort, throttle), None))
            except Exception as exc:  # noqa: BLE001 - the main thread translates it
                done.put((job, None, exc))
                return

    workers = [threading.Thread(target=work, name=f"obs-copy-{i}", daemon=True)
               for i in range(count)]
    for worker in workers:
        worker.start()
    return workers


def _next_result(done, workers):
    """The next (job, outcome, exception); waits in short steps so Ctrl-C is seen at once."""
    while True:
        try:
            return done.get(timeout=0.2)
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers):
                try:  # the last worker may have put its result and ended after the wait
                    return done.get_nowait()
                except queue.Empty:
                    raise ObsError("the copy's threads all stopped before the copy was "
                                   "done") from None


def copy_tree(src, dst, threads=None, progress=True, delete=False, exclude=()):
    """Copy every file under Location `src` into Location `dst`; returns CopyStats.

    delete=True then removes the destination's files that the source does not have (a
    mirror), once every copy has succeeded. `exclude`: relative names left alone."""
    threads = max(1, min(threads or default_threads(), MAX_POOL_CONNECTIONS))
    if not dst.is_remote and os.path.isdir(dst.path):
        removed = local.remove_debris(dst.path)
        if removed:
            log.info("removed %d temporary files an interrupted copy left in %s", removed,
                     dst.path)
    jobs, stale = _plan(src, dst, threads, set(exclude))
    if not dst.is_remote:
        os.makedirs(dst.path, exist_ok=True)
        for folder in sorted({job.folder for job in jobs}):
            os.makedirs(folder, exist_ok=True)
    abort = threading.Event()
    throttle = Throttle(threads)
    copied = skipped = nbytes = 0
    bar = tqdm(total=len(jobs), unit="file", desc=f"copy {src.url} -> {dst.url}",
               file=sys.stderr, disable=not progress or len(jobs) < 50,
               mininterval=0.5 if sys.stderr.isatty() else 15)
    done = queue.SimpleQueue()  # (job, outcome, exception) from the workers
    workers = _start_workers(jobs, min(threads, len(jobs)), abort, throttle, done)
    with bar:
        try:
            for _ in range(len(jobs)):
                job, outcome, exc = _next_result(done, workers)
                if exc is not None:
                    remote = src.is_remote or dst.is_remote
                    error = translate(exc, job.name, get_client() if remote else None)
                    raise type(error)(f"{error} [copy {src.url} -> {dst.url} stopped with "
                                      f"{copied + skipped} of {len(jobs)} files complete]") \
                        from None
                if outcome == "copied":
                    copied += 1
                    nbytes += job.size
                elif outcome == "skipped":
                    skipped += 1
                bar.update(1)
        finally:  # an error or Ctrl-C (SIGINT): the files in flight finish, no others start
            abort.set()
            for worker in workers:
                worker.join()
    if delete and stale:
        if dst.is_remote:
            s3.delete_keys(dst.bucket, stale)
        else:
            for path in stale:
                os.remove(path)
        log.info("removed %d files from %s that %s no longer has", len(stale), dst.url, src.url)
    log.info("copied %s -> %s: %d files (%.1f MB) sent, %d unchanged skipped",
             src.url, dst.url, copied, nbytes / 1e6, skipped)
    if throttle.lowest < throttle.ceiling:
        log.info("the store asked for fewer requests at once (503 SlowDown): this copy went down "
                 "to %d at a time of %d", throttle.lowest, throttle.ceiling)
    return CopyStats(copied, skipped, nbytes)
