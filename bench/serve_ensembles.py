"""What ensembles and test-time views cost to serve: the local server (batching on, as it
runs by default) on a plain package, then on `train.py --mode=ensemble` packages of 1, 2 and 3
members x --tta none / flip / crops; requests/s and p50/p99 latency at each concurrency, and
the ratio of requests/s to the plain package's. Members are copies of one untrained
classifier (the cost does not depend on the weights).

    python bench/serve_ensembles.py [--backbone resnet50] [--input_size 64]
                                    [--members 1,2,3] [--tta none,flip,crops]
                                    [--concurrency 1,8] [--seconds 10]

The seed's budget was 200 ms per image on its GPU; on a CPU compare the ratios.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import report  # noqa: E402
from bench.serve import build_package, measure, request_bodies, stop  # noqa: E402
from tests.servers import ROOT, PredictorServer  # noqa: E402


def ensemble_package(member, count, tta, out):
    """`count` copies of the package `member` as one ensemble with `tta` views, in out/model."""
    proc = subprocess.run([sys.executable, "train.py", "--mode=ensemble",
                           f"--members={','.join([member] * count)}", f"--tta={tta}",
                           f"--train_url={out}", f"--local_data_root={out}-cache"],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"ensemble of {count} with {tta} failed:\n{proc.stdout[-3000:]}")
    return os.path.join(out, "model")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input_size", type=int, default=64)
    parser.add_argument("--members", default="1,2,3")
    parser.add_argument("--tta", default="none,flip,crops")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--name", default="serve_ensembles", help="bench/results/<name>.json")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    work = tempfile.mkdtemp(prefix="serve-ensembles-")
    rows = []
    try:
        plain = build_package(os.path.join(work, "plain", "model"), args.backbone,
                              args.input_size)
        bodies = request_bodies()
        configs = [("plain", plain)] + [
            (f"{count} x tta {tta}", (count, tta))
            for count in map(int, args.members.split(",")) for tta in args.tta.split(",")]
        baseline = None
        for name, what in configs:
            model_dir = what if name == "plain" else ensemble_package(
                plain, what[0], what[1], os.path.join(work, name.replace(" ", "_")))
            server = PredictorServer(model_dir)
            try:
                results = measure(server, bodies, concurrencies, args.seconds, batching=True)
            finally:
                stop(server)
            baseline = baseline or results
            for c in concurrencies:
                stats = results[c]
                rows.append({"package": name, "concurrency": c, "rps": stats["rps"],
                             "ratio_to_plain": round(stats["rps"] / baseline[c]["rps"], 2)
                             if baseline[c]["rps"] else None,
                             "p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"],
                             "errors": stats["errors"]})
            print(f"{name}: " + ", ".join(f"c={c} {results[c]['rps']} req/s"
                                          for c in concurrencies), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args.name, rows, ["package", "concurrency", "rps", "ratio_to_plain", "p50_ms",
                             "p99_ms", "errors"],
           {"model": f"{args.backbone} at {args.input_size} px (untrained)",
            "seconds": args.seconds})


if __name__ == "__main__":
    main()
