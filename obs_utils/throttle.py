"""How much a tree copy keeps in flight: a number of requests the store can bear, and bytes that
fit in memory.

OBS (like S3) answers `503 SlowDown` when a bucket prefix gets requests faster than it can take
them; retrying at the same rate only draws more. The limit here is additive-increase,
multiplicative-decrease (TCP's congestion rule): halved on each SlowDown, grown back by one
after as many successes as the limit. Small files are read whole into memory, so the bytes in
flight are capped too.
"""
import threading

MEMORY_BUDGET = 256 << 20  # bytes of small files held at once by a copy's threads


class Throttle:
    """`with throttle.slot(size):` around one request; `slowed()` when the store said SlowDown."""

    def __init__(self, limit, memory_budget=MEMORY_BUDGET):
        self.ceiling = max(1, limit)
        self.limit = self.ceiling
        self.memory_budget = memory_budget
        self.in_flight = 0
        self.bytes_in_flight = 0
        self.lowest = self.ceiling  # the least the limit fell to: reported, and tested
        self._successes = 0
        self._changed = threading.Condition()

    def _fits(self, size):
        if self.in_flight >= self.limit:
            return False  # one request always fits, however large, or nothing would move
        return self.in_flight == 0 or self.bytes_in_flight + size <= self.memory_budget

    def slot(self, size=0):
        return _Slot(self, size)

    def acquire(self, size):
        with self._changed:
            self._changed.wait_for(lambda: self._fits(size))
            self.in_flight += 1
            self.bytes_in_flight += size

    def release(self, size, succeeded):
        with self._changed:
            self.in_flight -= 1
            self.bytes_in_flight -= size
            if succeeded:
                self._successes += 1
                if self._successes >= self.limit and self.limit < self.ceiling:
                    self.limit += 1
                    self._successes = 0
            self._changed.notify_all()

    def slowed(self):
        """The store answered SlowDown: halve the requests in flight (never below one)."""
        with self._changed:
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self._successes = 0


class _Slot:
    def __init__(self, throttle, size):
        self.throttle, self.size = throttle, size

    def __enter__(self):
        self.throttle.acquire(self.size)

    def __exit__(self, kind, _value, _traceback):
        self.throttle.release(self.size, succeeded=kind is None)
