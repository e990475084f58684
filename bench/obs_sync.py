"""Tree copy of many small files through a local S3 server (SeaweedFS by default, or moto; in
its own process):
obs_utils.copy_tree (parallel) against a plain sequential boto3 loop (one put_object / get_object
per file), upload and download.

    python bench/obs_sync.py [--server seaweed|moto] [--rtt_ms 0,10] [--files 1000] [--repeats 3]

Prints files/s for both and the ratio (goal: >= 2x the sequential loop), once per round-trip
time: 0 is bare loopback, where client and server share two cores and the CPU decides; 10 ms
(through bench/latency_proxy.py) is closer to a real OBS endpoint.
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import obs_utils  # noqa: E402
from bench import latency_proxy  # noqa: E402
from bench.common import median_seconds, report  # noqa: E402
from tests.servers import MotoServer, SeaweedServer, free_port, s3_client  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096, help="bytes per file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rtt_ms", default="0,10",
                        help="comma-separated round-trip times to add between client and server")
    parser.add_argument("--server", choices=["moto", "seaweed"], default="seaweed",
                        help="seaweed: a Go server (checks signatures); moto: a Python one whose "
                             "own CPU use caps any client on a 2-core machine")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="obs-bench-")
    if args.server == "moto":
        server, key, secret = MotoServer(), "bench", "bench"
    else:
        server = SeaweedServer(os.path.join(work, "weed"))
        key, secret = server.ACCESS_KEY, server.SECRET_KEY
    server.client().create_bucket(Bucket="bench")
    src = os.path.join(work, "src")
    for i in range(args.files):
        path = os.path.join(src, f"class_{i % 40:02d}", f"img_{i}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(args.size))
    names = sorted(os.path.relpath(os.path.join(d, n), src)
                   for d, _, files in os.walk(src) for n in files)
    run = {"n": 0}
    raw = {}

    def fresh(kind):
        run["n"] += 1
        return f"{kind}{run['n']}"

    def ours_up():
        prefix = fresh("ours")
        run.setdefault("first", prefix)  # what the download runs read back
        obs_utils.copy_tree(src, f"obs://bench/{prefix}/", threads=args.threads, progress=False)

    def loop_up():
        prefix = fresh("loop")
        for name in names:  # one PUT per file: the cheapest sequential form
            with open(os.path.join(src, name), "rb") as f:
                raw["client"].put_object(Bucket="bench", Key=f"{prefix}/{name}", Body=f)

    def ours_down():
        dst = os.path.join(work, fresh("down"))
        obs_utils.copy_tree(f"obs://bench/{run['first']}/", dst, threads=args.threads, progress=False)

    def loop_down():
        dst = os.path.join(work, fresh("down"))
        for name in names:  # one GET per file (download_file would add a HEAD)
            os.makedirs(os.path.dirname(os.path.join(dst, name)), exist_ok=True)
            body = raw["client"].get_object(Bucket="bench", Key=f"{run['first']}/{name}")["Body"].read()
            with open(os.path.join(dst, name), "wb") as f:
                f.write(body)

    rows = []
    try:
        for rtt in [float(x) for x in args.rtt_ms.split(",")]:
            proxy = None
            url = server.url
            if rtt > 0:
                port = free_port()
                proxy = latency_proxy.start(port, int(server.url.rsplit(":", 1)[1]), rtt)
                url = f"http://127.0.0.1:{port}"
            os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID=key,
                              AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1")
            raw["client"] = s3_client(url, key, secret)
            upload = ("upload", ours_up, loop_up)
            download = ("download", ours_down, loop_down)
            for direction, ours, loop in (upload, download):
                t_ours, all_ours = median_seconds(ours, args.repeats)
                t_loop, all_loop = median_seconds(loop, args.repeats)
                rows.append({"rtt_ms": rtt, "direction": direction, "files": args.files,
                             "copy_tree files/s": round(args.files / t_ours, 1),
                             "sequential boto3 files/s": round(args.files / t_loop, 1),
                             "ratio": round(t_loop / t_ours, 2),
                             "runs_s": {"ours": all_ours, "loop": all_loop}})
            if proxy is not None:
                proxy.terminate()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report("obs_sync", rows, ["rtt_ms", "direction", "files", "copy_tree files/s",
                              "sequential boto3 files/s", "ratio"],
           {"server": args.server, "threads": args.threads, "file_size": args.size,
            "repeats": args.repeats})


if __name__ == "__main__":
    main()
