"""The serving batcher's guarantees, with a stand-in model call that behaves as
customize_service's predict does (rows in order, BadRequest when an image cannot be decoded):
a hard cap on the batch, one bad image isolated once, bounded waits."""
import threading
import time

import numpy as np
import pytest

from serving.batcher import Batcher
from serving.errors import BadRequest


class Model:
    """run(blobs): one row [value] per image; a blob b'bad' cannot be decoded."""

    def __init__(self, delay=0.0):
        self.calls, self.delay, self.lock = [], delay, threading.Lock()

    def __call__(self, blobs):
        with self.lock:
            self.calls.append(len(blobs))
        time.sleep(self.delay)
        if b"bad" in blobs:
            raise BadRequest("an image could not be decoded: it is cut short or corrupt")
        return np.array([[float(b.decode())] for b in blobs])


def concurrently(batcher, requests):
    """Submit every request at once; {index: rows or the exception}."""
    results, threads = {}, []

    def one(i, blobs):
        try:
            results[i] = batcher.submit(blobs)
        except Exception as exc:  # noqa: BLE001 - the test reads it
            results[i] = exc

    for i, blobs in enumerate(requests):
        threads.append(threading.Thread(target=one, args=(i, blobs)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_max_batch_is_a_hard_cap_and_a_big_request_runs_in_pieces():
    model = Model(delay=0.05)
    batcher = Batcher(model, max_batch=4, max_wait=0.05)
    requests = [[str(10 * i + k).encode() for k in range(3)] for i in range(5)]
    requests.append([str(100 + k).encode() for k in range(10)])  # larger than max_batch
    results = concurrently(batcher, requests)
    assert max(model.calls) <= 4, model.calls
    for i, blobs in enumerate(requests):
        np.testing.assert_array_equal(results[i][:, 0], [float(b) for b in blobs])


def test_one_bad_image_fails_only_its_request_and_is_run_alone_once():
    """Three requests in one batch, one holding a bad image: the batch fails, each of its six
    images runs alone once (not each request, then each file again), and only the request
    with the bad image fails, naming its position."""
    from concurrent.futures import Future

    model = Model()
    batcher = Batcher(model)
    jobs = [(blobs, Future()) for blobs in ([b"1", b"2"], [b"3", b"bad", b"4"], [b"5"])]
    batcher._one_batch(jobs)
    np.testing.assert_array_equal(jobs[0][1].result()[:, 0], [1, 2])
    np.testing.assert_array_equal(jobs[2][1].result()[:, 0], [5])
    error = jobs[1][1].exception()
    assert isinstance(error, BadRequest) and error.position == 1
    assert model.calls == [6] + [1] * 6, model.calls  # the batch, then each image once


def test_no_request_waits_forever():
    slow = Batcher(Model(delay=5.0), timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer within"):
        slow.submit([b"1"])
    assert time.monotonic() - started < 2

    broken = Batcher(Model())
    broken.thread = threading.Thread(target=lambda: None)  # a batching thread that ended
    broken.thread.start()
    broken.thread.join()
    with pytest.raises(RuntimeError, match="batching thread has stopped"):
        broken.submit([b"1"])


def test_a_failure_outside_the_model_call_does_not_stop_batching(monkeypatch):
    batcher = Batcher(Model())
    real = batcher._one_batch
    calls = []

    def once_broken(jobs):
        calls.append(1)
        if len(calls) == 1:
            jobs[0][1].set_exception(RuntimeError("lost"))
            raise KeyError("a bug in the batching code")
        return real(jobs)

    monkeypatch.setattr(batcher, "_one_batch", once_broken)
    with pytest.raises(RuntimeError, match="lost"):
        batcher.submit([b"1"])
    np.testing.assert_array_equal(batcher.submit([b"2"])[:, 0], [2])
    assert batcher.thread.is_alive()
