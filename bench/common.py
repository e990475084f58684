"""What every benchmark shares: medians of repeated runs, a printed table, a JSON record."""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(command, what):
    """Run one of the bundle's scripts (["train.py", flags...], ["retrieve.py", ...]) from
    the checkout: (its stdout, seconds it took), or SystemExit with the end of its log."""
    started = time.time()
    proc = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return proc.stdout, time.time() - started


def mean_sd(values):
    """"mean +- sd" to three places (sd 0 for a single value)."""
    return (f"{statistics.mean(values):.3f} +- "
            f"{statistics.stdev(values) if len(values) > 1 else 0:.3f}")


def median_seconds(fn, repeats):
    """Median wall time of `fn()` over `repeats` runs (fn may return a value; it is ignored)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def interleaved_median_seconds(fns, repeats):
    """{name: (median, times)} for several contenders, run in turn round by round: a machine
    that slows down for a while slows every contender, so their ratios stay fair. A contender
    is fn, or (prime, fn) with prime() run untimed before each fn() (e.g. to empty a prefetch
    buffer that filled up while the others ran)."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, contender in fns.items():
            prime, fn = contender if isinstance(contender, tuple) else (None, contender)
            if prime is not None:
                prime()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), t) for name, t in times.items()}


def machine():
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version()}


def report(name, rows, columns, extra=None):
    """Print `rows` (dicts) as a table and write bench/results/<name>.json."""
    widths = [max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(f"{row.get(c, '')}".ljust(w) for c, w in zip(columns, widths)))
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}, f,
                  indent=2)
    print(f"written: {path}")
