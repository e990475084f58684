"""Cross-request batching: images of concurrent requests go through the model in one call, so
throughput grows with load (one call on 32 images costs far less than 32 calls on one)."""
import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from .errors import BadRequest

log = logging.getLogger("serving")


class Batcher(object):
    """Hands `run(list of image bytes) -> array [n, classes]` batches gathered from many
    threads: a batch leaves when it holds max_batch images, or max_wait seconds after its first
    image came. A batch that fails on one bad image is run again request by request, so a bad
    image fails only its own request."""

    def __init__(self, run, max_batch=32, max_wait=0.005):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.queue = queue.Queue()
        self.batches = self.images = 0  # counters, for /health and the benchmark
        self.active, self.lock = 0, threading.Lock()  # requests submitted and not answered
        self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.thread.start()

    def submit(self, blobs):
        """Probabilities for `blobs` (one request's images); blocks until its batch ran."""
        future = Future()
        with self.lock:
            self.active += 1
        try:
            self.queue.put((list(blobs), future))
            return future.result()
        finally:
            with self.lock:
                self.active -= 1

    def _gather(self):
        """The next batch: every request already waiting, then more until max_wait has passed
        since the first came (or the batch is full); no wait when every request in progress is
        in the batch already (a lone client pays nothing for batching)."""
        jobs = [self.queue.get()]
        count = len(jobs[0][0])
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
            jobs.append(job)
            count += len(job[0])
        return jobs

    def _loop(self):
        while True:
            jobs = self._gather()
            self.batches += 1
            self.images += sum(len(blobs) for blobs, _ in jobs)
            try:
                probabilities = self.run([b for blobs, _ in jobs for b in blobs])
            except BadRequest:
                for blobs, future in jobs:  # find whose image it was
                    _settle(future, self.run, blobs)
                continue
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                log.exception("model call failed")
                for _, future in jobs:
                    future.set_exception(exc)
                continue
            start = 0
            for blobs, future in jobs:
                future.set_result(np.asarray(probabilities[start:start + len(blobs)]))
                start += len(blobs)


def _settle(future, run, blobs):
    try:
        future.set_result(run(blobs))
    except Exception as exc:  # noqa: BLE001 - handed to the waiting request
        future.set_exception(exc)

