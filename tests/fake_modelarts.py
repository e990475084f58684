"""A fake ModelArts endpoint for the tests: a real HTTP server on 127.0.0.1 (in a thread) with
canned replies, recording every request. A job goes through `phases`, one per status poll,
and its log grows by one line per poll."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeModelArts:
    def __init__(self, phases=("Creating", "Pending", "Running", "Running", "Completed"),
                 flavors=("modelarts.vm.cpu.8u", "modelarts.vm.gpu.p100"),
                 engines=(("eng-tf", "TensorFlow", "tensorflow_2.6.0"),
                          ("eng-tf2", "TensorFlow", "tensorflow_2.16.1"),
                          ("eng-pt", "PyTorch", "pytorch_2.1.0"))):
        self.requests, self.phases, self.polls = [], list(phases), 0
        self.flavors, self.engines = flavors, engines
        self.stopped = False
        self.model_polls = self.service_polls = 0
        self.outages, self.no_log = 0, False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size) if size else b""
                fake.requests.append({"method": self.command, "path": self.path,
                                      "headers": dict(self.headers),
                                      "body": json.loads(raw) if raw else None})
                status, reply = fake.reply(self.command, self.path.split("?")[0],
                                           self.headers.get("Authorization", ""))
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def phase(self):
        return "Terminated" if self.stopped else self.phases[min(self.polls,
                                                                  len(self.phases) - 1)]

    def reply(self, method, path, authorization):
        if "Access=BAD" in authorization:
            return 401, {"error_code": "APIGW.0301", "error_msg": "Incorrect IAM "
                                                                  "authentication information"}
        if path.endswith("/training-job-flavors"):
            return 200, {"flavors": [{"flavor_id": f} for f in self.flavors]}
        if path.endswith("/training-job-engines"):
            return 200, {"items": [{"engine_id": i, "engine_name": n, "engine_version": v}
                                   for i, n, v in self.engines]}
        if method == "POST" and path.endswith("/training-jobs"):
            return 201, {"metadata": {"id": "job-1"}, "status": {"phase": "Creating"}}
        if method == "POST" and path.endswith("/job-1/actions"):
            self.stopped = True
            return 202, {"status": {"phase": "Terminating"}}
        if path.endswith("/training-jobs/job-1"):
            if self.outages:  # a passing server error
                self.outages -= 1
                return 503, {"error_code": "ModelArts.0503", "error_msg": "busy"}
            phase = self.phase()
            self.polls += 1
            status = {"phase": phase}
            if phase == "Failed":
                status["task_statuses"] = [{"task": "worker-0", "exit_code": 2,
                                            "message": "data error"}]
            return 200, {"metadata": {"id": "job-1"}, "status": status}
        if path.endswith("/tasks/worker-0/logs/preview"):
            if self.no_log:
                return 404, {"error_code": "ModelArts.2760", "error_msg": "no log"}
            lines = [f"log line {i}" for i in range(self.polls)]
            content = "".join(line + "\n" for line in lines)
            return 200, {"content": content, "full_size": len(content.encode())}
        if path.endswith("/v1/proj123/services/specifications"):
            return 200, {"specifications": [
                {"specification": "modelarts.vm.cpu.2u", "spec_status": "normal",
                 "is_open": True},
                {"specification": "modelarts.vm.gpu.t4", "spec_status": "sellout",
                 "is_open": True}]}
        if method == "POST" and path.endswith("/v1/proj123/models"):
            return 200, {"model_id": "m-1"}
        if path.endswith("/models/m-1"):
            self.model_polls += 1
            return 200, {"model_id": "m-1", "model_status": "publishing"
                         if self.model_polls < 2 else "published"}
        if method == "POST" and path.endswith("/v1/proj123/services"):
            return 200, {"service_id": "s-1"}
        if path.endswith("/services/s-1"):
            self.service_polls += 1
            ready = self.service_polls >= 2
            return 200, {"service_id": "s-1", "status": "running" if ready else "deploying",
                         "access_address": "https://infer.example/v1/infers/s-1"}
        if "/training-jobs/" in path:
            return 404, {"error_code": "ModelArts.2758", "error_msg": "Training job not found"}
        return 404, {"error_code": "ModelArts.0001", "error_msg": f"no route {path}"}

    def stop(self):
        self.server.shutdown()
