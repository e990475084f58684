"""Cross-request batching: images of concurrent requests go through the model in one call, so
throughput grows with load (one call on 32 images costs far less than 32 calls on one)."""
import logging
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from .errors import BadRequest

log = logging.getLogger("serving")


class Batcher(object):
    """Hands `run(list of image bytes) -> array [n, classes]` batches gathered from many
    threads: a batch leaves when it holds max_batch images (never more: a request that would
    overflow it waits for the next one, and one larger than max_batch runs in pieces), or
    max_wait seconds after its first image came. A batch that fails on a bad image runs each
    of its images alone, once, so only the request holding it fails, naming which image."""

    def __init__(self, run, max_batch=32, max_wait=0.005, timeout=120.0):
        self.run, self.max_batch, self.max_wait = run, max(1, int(max_batch)), max_wait
        self.timeout = timeout  # the longest a request waits for its batch
        self.queue = queue.Queue()
        self.held = None  # a request that did not fit the last batch: the next one's first
        self.batches = self.images = 0  # counters, for /health and the benchmark
        self.active, self.lock = 0, threading.Lock()  # requests submitted and not answered
        self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.thread.start()

    def submit(self, blobs):
        """Probabilities for `blobs` (one request's images); blocks until its batch ran, at
        most `timeout` seconds (then TimeoutError), and refuses at once when the batching
        thread is gone (RuntimeError): no request waits forever."""
        if not self.thread.is_alive():
            raise RuntimeError("the batching thread has stopped (its error is in the log): "
                               "restart the server")
        future = Future()
        with self.lock:
            self.active += 1
        try:
            self.queue.put((list(blobs), future))
            try:
                return future.result(timeout=self.timeout)
            except FutureTimeout:
                raise TimeoutError("the model gave no answer within {:.0f} s".format(
                    self.timeout)) from None
        finally:
            with self.lock:
                self.active -= 1

    def _gather(self):
        """The next batch: every request already waiting, then more until max_wait has passed
        since the first came (or the batch is full); no wait when every request in progress is
        in the batch already (a lone client pays nothing for batching)."""
        first, self.held = self.held or self.queue.get(), None
        jobs, count = [first], len(first[0])
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.active <= len(jobs):
                    break  # waited enough, or no other request is in progress to wait for
                try:
                    job = self.queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if count + len(job[0]) > self.max_batch:
                self.held = job  # it would overflow this batch: it opens the next
                break
            jobs.append(job)
            count += len(job[0])
        return jobs

    def _loop(self):
        while True:
            try:
                jobs = self._gather()
                self._one_batch(jobs)
            except Exception:  # noqa: BLE001 - a bug here must not end batching for all
                log.exception("batcher: a batch failed outside the model call; going on")

    def _capped(self, blobs):
        """run() on at most max_batch images at a time (a lone request may hold more)."""
        parts = [self.run(blobs[i:i + self.max_batch])
                 for i in range(0, len(blobs), self.max_batch)]
        return np.concatenate([np.asarray(p) for p in parts]) if len(parts) > 1 \
            else np.asarray(parts[0])

    def _one_batch(self, jobs):
        blobs = [b for request, _ in jobs for b in request]
        self.batches += 1
        self.images += len(blobs)
        try:
            rows = list(self._capped(blobs))
        except BadRequest:  # some image is bad: each alone, once, to find whose it is
            rows = [_alone(self.run, blob) for blob in blobs]
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            log.exception("model call failed")
            for _, future in jobs:
                future.set_exception(exc)
            return
        start = 0
        for request, future in jobs:
            mine, start = rows[start:start + len(request)], start + len(request)
            failed = [(i, r) for i, r in enumerate(mine) if isinstance(r, Exception)]
            if failed:
                position, exc = failed[0]
                if isinstance(exc, BadRequest):
                    exc = BadRequest(str(exc), exc.status, position)
                future.set_exception(exc)
            else:
                future.set_result(np.stack(mine))


def _alone(run, blob):
    """One image's row, or the exception it raised."""
    try:
        return np.asarray(run([blob]))[0]
    except Exception as exc:  # noqa: BLE001 - handed to the image's request
        return exc
