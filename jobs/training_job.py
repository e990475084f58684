"""A ModelArts training job (the v2 API): its request body, and following it to the end with
its status changes and new log lines, each line printed once."""
import logging
import posixpath
import re
import shlex
import time

import obs_utils

from .client import CloudError

log = logging.getLogger("submit")
JOBS = "/v2/{project_id}/training-jobs"
JOB = "/v2/{project_id}/training-jobs/{training_job_id}"
ENDED = {"Completed": 0, "Failed": 1, "Abnormal": 1, "Terminated": 3}
KERAS3 = (2, 16)  # the oldest TensorFlow train.py runs on
RETRIES = 5       # transient errors in a row a follow rides out


def obs_path(url):
    """obs://bucket/key/ or s3://bucket/key/ -> /bucket/key/ (the form the job API takes)."""
    if not obs_utils.is_remote(url):
        raise ValueError(f"{url!r} is not an OBS location: write it as obs://<bucket>/<path>/")
    where = obs_utils.parse(url)
    return f"/{where.bucket}/{where.path}"


def engine_spec(engine):
    """--engine: an engine id, name+version (e.g. TensorFlow+tensorflow_2.16...), or a custom
    image (swr.<region>.myhuaweicloud.com/org/image:tag)."""
    if "/" in engine:
        return {"image_url": engine}
    if "+" in engine:
        name, version = engine.split("+", 1)
        return {"engine_name": name, "engine_version": version}
    return {"engine_id": engine}


def job_body(name, code_url, data_url, train_url, flavor, engine, node_count, parameters,
             description=""):
    """The JSON body of POST /v2/{project_id}/training-jobs: train.py from code_url, data_url
    and train_url as the job's input and output, every other flag as a hyperparameter."""
    code_dir = obs_path(code_url).rstrip("/") + "/"
    return {
        "kind": "job",
        "metadata": {"name": name, "description": description},
        "algorithm": {
            "code_dir": code_dir,
            "boot_file": code_dir + "train.py",
            "engine": engine_spec(engine),
            "parameters": [{"name": k, "value": str(v)} for k, v in parameters],
            "inputs": [{"name": "data_url", "remote": {"obs": {"obs_url": obs_path(data_url)}}}],
            "outputs": [{"name": "train_url",
                         "remote": {"obs": {"obs_url": obs_path(train_url)}}}],
        },
        "spec": {"resource": {"flavor_id": flavor, "node_count": int(node_count)}},
    }


# A custom image (images/train/Dockerfile): the job's inputs are downloaded to, and its output
# uploaded from (every 30 s and at the end), these local folders; train.py reads local paths,
# since a custom image has no MoXing and no OBS credentials.
HOME = "/home/ma-user"          # where a custom image's boot command must run
INPUTS = HOME + "/modelarts/inputs"
OUTPUTS = HOME + "/modelarts/outputs"
IMAGE_PYTHON = HOME + "/venv/bin/python"  # images/train/Dockerfile's interpreter
# train.py flags whose OBS values become input channels (the rest are passed as they are)
INPUT_FLAGS = ("data_url", "val_data_url", "test_data_url", "manifest", "pretrained_weights")


def image_job_body(name, code_url, data_url, train_url, flavor, image, node_count, parameters,
                   description=""):
    """The v2 body for a custom image: the code from code_url (downloaded to $MA_JOB_DIR/<its
    last folder>), every OBS input of train.py mapped to a local folder, train_url mapped to
    the local output folder, and the boot command running train.py with those local paths
    (the flags are in the command, so nothing depends on how the platform appends them)."""
    code_dir = obs_path(code_url).rstrip("/") + "/"
    code_name = code_dir.rstrip("/").rsplit("/", 1)[-1]
    inputs, flags = [], []
    for flag, value in [("data_url", data_url), *parameters]:
        if flag not in INPUT_FLAGS or not obs_utils.is_remote(value):
            flags.append(f"--{flag}={value}")
            continue
        if value.endswith("/"):  # a folder: its channel is named as the flag
            channel, remote, local = flag, obs_path(value), f"{INPUTS}/{flag}_0/"
            flags.append(f"--{flag}={local}")
        else:  # a file: its folder is the channel, and the flag points into it
            channel, remote = f"{flag}_folder", posixpath.dirname(obs_path(value)) + "/"
            local = f"{INPUTS}/{channel}_0/"
            flags.append(f"--{flag}={local}{posixpath.basename(value)}")
        inputs.append({"name": channel, "local_dir": local.rstrip("/"),
                       "remote": {"obs": {"obs_url": remote}}})
    output = f"{OUTPUTS}/train_url_0"
    flags.append(f"--train_url={output}/")
    command = (f"cd {HOME} && {IMAGE_PYTHON} ${{MA_JOB_DIR}}/{code_name}/train.py "
               + " ".join(shlex.quote(flag) for flag in flags))
    return {
        "kind": "job",
        "metadata": {"name": name, "description": description},
        "algorithm": {
            "code_dir": code_dir,
            "command": command,
            "engine": {"image_url": image},
            "inputs": inputs,
            "outputs": [{"name": "train_url", "local_dir": output,
                         "remote": {"obs": {"obs_url": obs_path(train_url)}}}],
        },
        "spec": {"resource": {"flavor_id": flavor, "node_count": int(node_count)}},
    }


class LogTail:
    """New lines of a log whose preview is its newest part: what was printed is never printed
    again, also when the window moves on; a last line still being written waits for the next
    poll (or the end)."""

    def __init__(self):
        self.head, self.printed, self.anchor = "", 0, ""
        self.offset = None  # bytes of the whole log printed, when the API gives full_size

    def new_lines(self, content, final=False, full_size=None):
        content = content or ""
        if full_size is not None:  # exact: the preview is the last bytes of the whole log
            data = content.encode()
            start = max(0, (self.offset or 0) - (int(full_size) - len(data)))
            fresh = data[start:]
            if not final:
                fresh = fresh[:fresh.rfind(b"\n") + 1]
            self.offset = int(full_size) - len(data) + start + len(fresh)
            return fresh.decode(errors="replace").splitlines()
        if self.head and content.startswith(self.head):
            start = self.printed  # the same window, grown
        else:  # the window moved (or first call): continue after the last lines printed
            start = 0
            lines = self.anchor.splitlines(keepends=True)
            for count in (5, 3, 1):
                anchor = "".join(lines[-count:])
                at = content.rfind(anchor) if anchor else -1
                if at >= 0:
                    start = at + len(anchor)
                    break
        fresh = content[start:]
        if not final:
            fresh = fresh[:fresh.rfind("\n") + 1]  # whole lines only
        self.head, self.printed = content[:200], start + len(fresh)
        if fresh:
            self.anchor = (self.anchor + fresh)[-2000:]
        return fresh.splitlines()


def _version(text):
    return tuple(int(n) for n in re.findall(r"\d+", str(text))[:3])


def check_choices(client, flavor, engine):
    """The engine to use: a flavor or engine the API does not list is refused with the list
    (what is valid differs by region and account); no --engine takes the newest TensorFlow
    engine listed. Nothing is checked in a dry run."""
    flavors = client.call("GET", "/v2/{project_id}/training-job-flavors")
    if flavors is None:
        return engine or "TensorFlow+<the newest TensorFlow engine, chosen at submission>"
    ids = [f.get("flavor_id") for f in flavors.get("flavors", [])]
    if flavor not in ids:
        raise ValueError(f"--flavor={flavor} is not offered here; the flavors are: "
                         f"{', '.join(ids) or 'none'}")
    engines = client.call("GET", "/v2/{project_id}/training-job-engines") or {}
    items = engines.get("items", [])
    if "/" in engine:  # a custom image: not in the engine list
        return engine
    if not engine:
        tensorflow = [e for e in items if "tensorflow" in str(e.get("engine_name")).lower()
                      and _version(e.get("engine_version")) >= KERAS3]
        if not tensorflow:
            raise ValueError("no TensorFlow >= 2.16 (Keras 3) engine is listed here, which "
                             "train.py needs: pass --image=<the training image of images/"
                             "train, pushed to SWR: swr.<region>.myhuaweicloud.com/<org>/"
                             "<name>:<tag>> (README, 'Run on ModelArts')")
        newest = max(tensorflow, key=lambda e: _version(e.get("engine_version")))
        engine = f"{newest.get('engine_name')}+{newest.get('engine_version')}"
        log.info("engine: %s (the newest TensorFlow listed; --engine to choose)", engine)
    known = {e.get("engine_id") for e in items} | {
        f"{e.get('engine_name')}+{e.get('engine_version')}" for e in items}
    if engine not in known:
        listed = ", ".join(sorted(f"{e.get('engine_id')} ({e.get('engine_name')}+"
                                  f"{e.get('engine_version')})" for e in items))
        raise ValueError(f"--engine={engine} is not offered here; the engines are: "
                         f"{listed or 'none'}")
    return engine


def status(client, job_id):
    """(phase, the whole reply) of a job."""
    reply = client.call("GET", JOB, training_job_id=job_id) or {}
    return (reply.get("status") or {}).get("phase", "Unknown"), reply


def exit_codes(reply):
    """' (worker-0 exit code 2: ...)' from a job's task statuses, or ''."""
    tasks = (reply.get("status") or {}).get("task_statuses") or []
    found = [f"{t.get('task')} exit code {t.get('exit_code')}" + (
        f": {t.get('message')}" if t.get("message") else "")
        for t in tasks if isinstance(t, dict) and t.get("exit_code") is not None]
    return f" ({'; '.join(found)})" if found else ""


def log_preview(client, job_id, task="worker-0"):
    """The newest part of a task's log: (text, the whole log's size in bytes or None)."""
    reply = client.call("GET", JOB + "/tasks/{task_id}/logs/preview", training_job_id=job_id,
                        task_id=task) or {}
    return reply.get("content", ""), reply.get("full_size")


def log_text(client, job_id, task="worker-0"):
    return log_preview(client, job_id, task)[0]


def follow(client, job_id, printer=print, interval=10.0, sleep=time.sleep, task="worker-0"):
    """Print status changes and new log lines until the job ends; returns its exit code (0
    only for Completed). Up to RETRIES transient errors in a row (a 5xx, a dropped
    connection) are ridden out: a job of hours must not lose its follower to one."""
    tail, last, failures = LogTail(), None, 0
    while True:
        try:
            phase, _ = status(client, job_id)
            failures = 0
        except CloudError as exc:
            failures += 1
            if not exc.transient or failures > RETRIES:
                raise CloudError(f"{exc}; the job may still run: python submit.py logs "
                                 f"{job_id} --follow") from None
            sleep(interval * failures)
            continue
        if phase != last:
            printer(f"[{job_id}] {phase}")
            last = phase
        ended = phase in ENDED
        if phase == "Running" or ended:
            try:
                content, size = log_preview(client, job_id, task)
            except CloudError:  # no log yet (a job that failed early has none): next poll
                content, size = "", None
            for line in tail.new_lines(content, final=ended, full_size=size):
                printer(line)
        if ended:
            return ENDED[phase]
        sleep(interval)
