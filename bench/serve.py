"""The local predictor server under load: p50/p99 latency and requests/s at several
concurrencies, request batching off (--max_batch=1) against on (--max_batch=N), and the same
package under the stand-in of ModelArts' own framework (its Flask app, no batching), in one run.

    python bench/serve.py [--model_dir DIR] [--backbone resnet50] [--input_size 64]
                          [--concurrency 1,8,32] [--seconds 10] [--max_batch 32]
                          [--platform_python PYTHON]

Each mode gets its own server process (tests.servers.PredictorServer, the package's own
customize_service.py), warmed up, then driven by c client threads, each with its own HTTP
session, posting one real JPEG per request (multipart field `images`) for --seconds. Batching
on also reports the mean images per model call, from /health's counters.

Without --model_dir a package is built on the spot: a fresh classifier with random weights
(nothing is trained; the answers do not matter, only their cost), exported the way train.py
exports it. The default is ResNet50 at 64 px: the benchmark measures serving overhead and
batching, a realistic backbone makes the per-call cost realistic, and 64 px keeps a run to a
couple of minutes on a small CPU; pass --input_size 224 for the real thing.

Client and server share this machine's cores (two here): the clients send pre-encoded bodies
to stay cheap, but their CPU time is taken from the server, at every concurrency and in both
modes alike.

The platform path (tests/modelarts_framework/app.py, run by --platform_python: this Python
by default, or the tests' cached Python 3.7 + TF 2.6 environment) serves each request on its
own, as the platform's TF images do; it shows what a package costs there beside our server.

Goal: >= 2x requests/s at concurrency 32 with batching on.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import requests  # noqa: E402
from urllib3 import encode_multipart_formdata  # noqa: E402

from bench.common import report  # noqa: E402
from tests.images import digit_image, encode  # noqa: E402
from tests.servers import PlatformServer, PredictorServer  # noqa: E402

GOAL = 2.0


def build_package(folder, backbone, input_size):
    """A model package of a fresh (untrained) classifier in `folder`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from export import package
    from models import build

    model, _ = build.build_classifier(backbone, 10, input_size)
    class_names = [f"class_{i}" for i in range(10)]
    return package.build(model, class_names, input_size, "letterbox", metrics=None, runtime="",
                         folder=folder)


def request_bodies(count=8):
    """[(body, content type)]: real JPEGs of different digits and sizes (64..256 px), each
    encoded once as a multipart body so the clients spend no CPU on it."""
    bodies = []
    for i in range(count):
        size = 64 + (192 * i) // max(count - 1, 1)
        image, _ = digit_image(100 + 37 * i, size)
        fields = {"images": (f"digit_{i}.jpg", encode(image, quality=90), "image/jpeg")}
        bodies.append(encode_multipart_formdata(fields))
    return bodies


def server_cpu_seconds(server):
    """The server process's user + system CPU time so far, from /proc (Linux)."""
    with open(f"/proc/{server.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health(url):
    return requests.get(url + "/health", timeout=10).json()


def drive(url, bodies, concurrency, seconds):
    """c threads posting for `seconds` -> (latencies in s, errors, elapsed s, first error)."""
    latencies = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    first_error = []
    ready = threading.Barrier(concurrency + 1)
    times = {}

    def client(k):
        session = requests.Session()
        mine, n = latencies[k], k
        ready.wait()
        deadline = times["stop"]
        while True:
            body, content_type = bodies[n % len(bodies)]
            n += 1
            start = time.perf_counter()
            if start >= deadline:
                break
            try:
                reply = session.post(url + "/", data=body, timeout=120,
                                     headers={"Content-Type": content_type})
                ok = reply.status_code == 200 and "result" in reply.json()
                if not ok and not first_error:
                    first_error.append(f"{reply.status_code}: {reply.text[:200]}")
            except (requests.RequestException, ValueError) as exc:
                ok = False
                if not first_error:
                    first_error.append(repr(exc)[:200])
            if ok:
                mine.append(time.perf_counter() - start)
            else:
                errors[k] += 1
        session.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True)
               for k in range(concurrency)]
    for t in threads:
        t.start()
    times["start"] = time.perf_counter()
    times["stop"] = times["start"] + seconds
    ready.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - times["start"]  # requests begun before the stop count
    return ([x for xs in latencies for x in xs], sum(errors), elapsed,
            first_error[0] if first_error else None)


def measure(server, bodies, concurrencies, seconds, batching):
    """{concurrency: stats} for one server."""
    for body, content_type in bodies:  # warm-up: load, first calls ...
        reply = requests.post(server.url + "/", data=body, timeout=120,
                              headers={"Content-Type": content_type})
        reply.raise_for_status()
    drive(server.url, bodies, max(concurrencies), min(2.0, seconds))  # ... and batch shapes
    results = {}
    for c in concurrencies:
        before = health(server.url)
        cpu = time.process_time(), server_cpu_seconds(server)
        latencies, errors, elapsed, first_error = drive(server.url, bodies, c, seconds)
        client_cpu = time.process_time() - cpu[0]
        server_cpu = server_cpu_seconds(server) - cpu[1]
        after = health(server.url)
        ms = np.asarray(latencies) * 1000.0
        stats = {"rps": round(len(latencies) / elapsed, 1),
                 "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
                 "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
                 "max_ms": round(float(ms.max()), 1) if len(ms) else None,
                 "requests": len(latencies), "errors": errors, "first_error": first_error,
                 "rss_mb": round(server.rss_mb(), 1),
                 # cores busy on average (this machine has os.cpu_count())
                 "server_cores": round(server_cpu / elapsed, 2),
                 "client_cores": round(client_cpu / elapsed, 2)}
        if batching:
            calls = after["batches"] - before["batches"]
            stats["mean_batch"] = round((after["images"] - before["images"]) / calls, 2) \
                if calls else None
        results[c] = stats
        print(f"  max_batch={'on' if batching else 'off'} c={c}: {stats}", flush=True)
    return results


def stop(server):
    server.stop()
    try:
        server.proc.wait(30)
    except Exception:  # noqa: BLE001 - a server that does not stop is killed
        server.proc.kill()
        server.proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default=None,
                        help="a model package (default: build one, untrained, see above)")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input_size", type=int, default=64)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=10, help="per measurement")
    parser.add_argument("--max_batch", type=int, default=32, help="batching on")
    parser.add_argument("--max_wait_ms", type=float, default=5)
    parser.add_argument("--threads", type=int, default=32, help="the server's threads")
    parser.add_argument("--platform_python", default=sys.executable,
                        help="the Python that runs the stand-in platform framework (needs "
                             "Flask and TensorFlow); '' to leave that path out")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    work = tempfile.mkdtemp(prefix="serve-bench-")
    try:
        if args.model_dir is None:
            start = time.perf_counter()
            model_dir = build_package(os.path.join(work, "model"), args.backbone,
                                      args.input_size)
            print(f"built {args.backbone} at {args.input_size} px in "
                  f"{time.perf_counter() - start:.0f} s: {model_dir}", flush=True)
        else:
            model_dir = os.path.abspath(args.model_dir)
        bodies = request_bodies()
        modes = {}
        for name, max_batch in (("off", 1), ("on", args.max_batch)):
            server = PredictorServer(model_dir, f"--max_batch={max_batch}",
                                     f"--max_wait_ms={args.max_wait_ms}",
                                     f"--threads={args.threads}")
            try:
                modes[name] = measure(server, bodies, concurrencies, args.seconds,
                                      batching=max_batch > 1)
            finally:
                stop(server)
        if args.platform_python:
            server = PlatformServer(model_dir, python=args.platform_python)
            try:
                modes["platform"] = measure(server, bodies, concurrencies, args.seconds,
                                            batching=False)
            finally:
                stop(server)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for c in concurrencies:
        off, on = modes["off"][c], modes["on"][c]
        row = {"concurrency": c, "rps_off": off["rps"], "rps_on": on["rps"],
               "ratio": round(on["rps"] / off["rps"], 2) if off["rps"] else None,
               "p50_off_ms": off["p50_ms"], "p50_on_ms": on["p50_ms"],
               "p99_off_ms": off["p99_ms"], "p99_on_ms": on["p99_ms"],
               "mean_batch_on": on.get("mean_batch"),
               "errors": off["errors"] + on["errors"], "detail": {"off": off, "on": on}}
        if "platform" in modes:
            platform = modes["platform"][c]
            row.update(rps_platform=platform["rps"], p99_platform_ms=platform["p99_ms"],
                       errors=row["errors"] + platform["errors"])
            row["detail"]["platform"] = platform
        rows.append(row)
    ratio = next((r["ratio"] for r in rows if r["concurrency"] == 32), None)
    goal_met = None if 32 not in concurrencies else ratio is not None and ratio >= GOAL
    columns = ["concurrency", "rps_off", "rps_on", "ratio", "p50_off_ms", "p50_on_ms",
               "p99_off_ms", "p99_on_ms", "mean_batch_on"]
    columns += ["rps_platform", "p99_platform_ms"] if "platform" in modes else []
    report("serve", rows, columns + ["errors"],
           {"goal": ">= 2x at concurrency 32", "goal_met": goal_met,
            "model": args.model_dir or f"{args.backbone} at {args.input_size} px (untrained)",
            "seconds": args.seconds, "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms, "threads": args.threads,
            "platform_python": args.platform_python or None})
    if goal_met is not None:
        print(f"goal >= {GOAL:g}x at concurrency 32: {'met' if goal_met else 'NOT met'} "
              f"({ratio}x)")


if __name__ == "__main__":
    main()
